"""``charrnn-train``: compose the Hydra config, instantiate, fit, test, write metrics.json.

Read top to bottom, :func:`train` is the whole training path: data -> vocabulary -> model ->
LightningModule -> Trainer (loggers, callbacks) -> fit -> test on the best checkpoint -> summary.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from charrnn.errors import UserError
from charrnn.generate import generate
from charrnn.module import CharRNNModule
from charrnn.runs import read_checkpoint

# A short random suffix for run directories, so two runs started in the same second never share
# one. Cached: every use within one config resolves to the same value.
OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True, replace=True)

HPARAM_METRICS = ("val/bpc", "val/bpc_best")


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, with a bad value in the config reported as a user error."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, ValueError):
            raise UserError(str(e.__cause__)) from None
        raise


def check_devices(trainer_cfg: DictConfig) -> None:
    """Refuse, before any work, a GPU request this machine cannot serve."""
    accelerator = str(trainer_cfg.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = trainer_cfg.get("devices", 1)
        wanted = devices if isinstance(devices, int) and devices > 0 else 1
        if available < wanted:
            raise UserError(
                f"trainer.accelerator={accelerator} asks for {wanted} CUDA GPU(s) but this machine has {available}; "
                f"use trainer=cpu or trainer=auto, or install a CUDA build of torch on a machine with GPUs"
            )


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"model.hidden_size": 256, ...}`` for TensorBoard's HPARAMS tab."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not str(key).startswith("_"):
                    walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node if isinstance(node, (int, float, str, bool)) else str(node)

    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("output_dir", None)  # type: ignore[union-attr]
    walk(container, "")
    return flat


def log_hparams(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Register the config with val/bpc as metrics, so HPARAMS compares runs (Lightning's own needs a metric value now)."""
    from torch.utils.tensorboard.summary import hparams

    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()
            for summary in hparams(flat_config(cfg), {name: 0.0 for name in HPARAM_METRICS}):
                writer.add_summary(summary)


def train(cfg: DictConfig) -> float:
    """Train one model as ``cfg`` says; returns the best full-split validation bits per char."""
    started = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_devices(cfg.trainer)
    if cfg.get("ckpt_path"):
        read_checkpoint(cfg.ckpt_path)  # refuses unsafe or broken files before Lightning opens them

    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    vocab = datamodule.vocab
    vocab.save(out / "vocab.json")

    model = build(cfg.model, vocab_size=len(vocab))
    module = CharRNNModule(
        model,
        vocab,
        optimizer=build(cfg.optim),
        scheduler=build(cfg.scheduler) if cfg.get("scheduler") else None,
        stateful=datamodule.batching == "stateful",
        sample_length=cfg.sample.length,
        sample_prompt=cfg.sample.prompt,
    )

    trainer_cfg = cfg.trainer.copy()
    interval, max_steps = trainer_cfg.get("val_check_interval"), trainer_cfg.get("max_steps", -1)
    if isinstance(interval, int) and max_steps and max_steps > 0 and interval > max_steps:
        trainer_cfg.val_check_interval = max_steps  # validate at least once, at the end
    loggers = [build(c) for c in cfg.get("logger", {}).values()] if cfg.get("logger") else []
    callbacks = [build(c) for c in cfg.get("callbacks", {}).values()] if cfg.get("callbacks") else []
    trainer: L.Trainer = build(trainer_cfg, logger=loggers or False, callbacks=callbacks)
    log_hparams(trainer, cfg)

    fit_started = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_seconds = time.time() - fit_started
    final_val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    test = trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
    best_bpc = float(module.best_val_bpc)

    chars = trainer.global_step * datamodule.batch_size * datamodule.seq_len
    metrics = {
        "best_val_bpc": best_bpc,
        "best_checkpoint": best_path,
        "final": final_val,
        "test": {k: float(v) for k, v in (test[0] if test else {}).items()},
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "train_chars": chars,
        "fit_seconds": round(fit_seconds, 3),
        "train_chars_per_second": round(chars / fit_seconds, 1) if fit_seconds > 0 else None,
        "wall_seconds": round(time.time() - started, 3),
    }
    if trainer.is_global_zero:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        prompt = cfg.sample.prompt or vocab.chars[0]
        sample = prompt + "".join(generate(module.model, vocab, prompt, max(1, cfg.sample.length), cfg.sample.temperature, seed=cfg.seed))
        print(f"\n--- sample from the best checkpoint ---\n{sample}\n---------------------------------------")
        print(f"run dir:       {out}")
        print(f"best val bpc:  {best_bpc:.4f}   test bpc: {metrics['test'].get('test/bpc', math.nan):.4f}")
        print(f"throughput:    {metrics['train_chars_per_second']} chars/s over {trainer.global_step} steps")
        print(f"watch it:      tensorboard --logdir {out}")
    return best_bpc


@hydra.main(version_base="1.3", config_path="pkg://charrnn.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Console entry point: user mistakes end in one sentence on stderr and exit code 2."""
    try:
        return train(cfg)
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = f"charrnn-train: error: {e}"
        print(message, file=sys.stderr)
        try:
            (Path(cfg.output_dir) / "error.txt").write_text(message + "\n")
        except OSError:
            pass
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records this job as failed and goes on with the others
        sys.exit(2)


if __name__ == "__main__":
    main()
