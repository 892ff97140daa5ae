"""``charrnn-train``: compose the Hydra config, instantiate, fit, test, write metrics.json.

Read top to bottom, :func:`train` is the whole training path: data -> vocabulary -> model ->
LightningModule -> Trainer (loggers, callbacks) -> fit -> test on the best checkpoint -> summary.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from charrnn.checkpoint_io import SafeCheckpointIO
from charrnn.checks import check_config
from charrnn.errors import UserError
from charrnn.generate import generate
from charrnn.launch import JobFailed, SweepRefused, check_devices, check_sweep_job, launcher_target, share_machine
from charrnn.module import CharRNNModule
from charrnn.provenance import RunRecord, corpus_info, write_json
from charrnn.resume import check_resume_matches, resume_config
from charrnn import rundirs  # noqa: F401  (registers the resolvers conf/hydra/default.yaml uses)
from charrnn.runs import read_checkpoint

HPARAM_METRICS = ("val/bpc", "val/bpc_best")


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, with a bad value in the config reported as a user error."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, ValueError):
            raise UserError(str(e.__cause__)) from None
        raise


def record_failure(cfg: DictConfig, message: str) -> None:
    """``<run dir>/error.txt``: the error's first line first (charrnn-report lists it), details after."""
    try:
        (Path(cfg.output_dir) / "error.txt").write_text(message.rstrip() + "\n")
    except (OSError, ValueError):
        pass


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
    if cfg.get("resume"):
        cfg = resume_config(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_config(cfg)
    resume_from = read_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None  # weights only: refuses unsafe files
    record = RunRecord(out, cfg.seed, str(cfg.trainer.get("accelerator")), list(HydraConfig.get().overrides.task))
    if cfg.get("ckpt_path"):
        record.update(resumed_from=str(Path(cfg.ckpt_path).resolve()))
    try:
        return fit_and_test(cfg, out, record, resume_from)
    except BaseException as e:  # KeyboardInterrupt too: run.json says how the run ended
        record.finish("failed", error=(f"{type(e).__name__}: {e}".strip().splitlines() or [""])[0])
        raise


def fit_and_test(cfg: DictConfig, out: Path, record: RunRecord, resume_from: dict[str, Any] | None) -> float:
    """Data, model, Trainer; fit; test the best checkpoint; write metrics.json and print the summary."""
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")  # reads and checks the corpus first: a bad file fails before any other work
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in the config and run.json
    vocab = datamodule.vocab
    vocab.save(out / "vocab.json")
    record.update(corpus=corpus_info(datamodule.corpus, datamodule.path, datamodule.text), vocab="".join(vocab.chars))

    model = build(cfg.model, vocab_size=len(vocab))
    if resume_from is not None:
        check_resume_matches(resume_from, vocab.chars, model.config(), str(cfg.ckpt_path))
    module = CharRNNModule(
        model,
        vocab,
        optimizer=build(cfg.optim),
        scheduler=build(cfg.scheduler) if cfg.get("scheduler") else None,
        stateful=datamodule.batching == "stateful",
        sample_length=cfg.sample.length,
        sample_prompt=cfg.sample.prompt,
    )

    loggers = [build(c) for c in cfg.get("logger", {}).values()] if cfg.get("logger") else []
    callbacks = [build(c) for c in cfg.get("callbacks", {}).values()] if cfg.get("callbacks") else []
    trainer: L.Trainer = build(cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=[SafeCheckpointIO()])
    log_hparams(trainer, cfg)

    fit_started = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_seconds = time.time() - fit_started
    final_val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if not final_val and cfg.get("ckpt_path"):
        # Resumed from a checkpoint taken at the very end (killed before the test): fit had nothing
        # left to do, so validate the final weights here for the same figures an unbroken run reports.
        final_val = {k: float(v) for k, v in (trainer.validate(module, datamodule=datamodule, verbose=False) or [{}])[0].items()}

    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    test = trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
    best_bpc = float(module.best_val_bpc)

    steps_here = trainer.global_step - (int(resume_from.get("global_step", 0)) if resume_from else 0)
    chars = steps_here * datamodule.batch_size * datamodule.seq_len  # trained by this call (resumes count their part)
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
        "wall_seconds": round(time.time() - record.started, 3),
    }
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
        record.finish("done", best_val_bpc=best_bpc, global_step=trainer.global_step)
        prompt = cfg.sample.prompt or vocab.chars[0]
        sample = prompt + "".join(generate(module.model, vocab, prompt, max(1, cfg.sample.length), cfg.sample.temperature, seed=cfg.seed))
        print(f"\n--- sample from the best checkpoint ---\n{sample}\n---------------------------------------")
        print(f"run dir:       {out}")
        print(f"best val bpc:  {best_bpc:.4f}   test bpc: {metrics['test'].get('test/bpc', math.nan):.4f}")
        print(f"throughput:    {metrics['train_chars_per_second']} chars/s over {steps_here} steps")
        print(f"watch it:      tensorboard --logdir {out}")
    return best_bpc


@hydra.main(version_base="1.3", config_path="pkg://charrnn.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Console entry point: user mistakes end in one sentence on stderr and exit code 2.

    In a sweep (-m) a failed job is recorded in its ``error.txt`` and re-raised, so the launcher
    goes on with the other jobs and Hydra exits non-zero at the end.
    """
    _HeldStderr.release()  # the job started: from here on stderr passes straight through
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        check_devices(cfg.trainer)  # first: a missing GPU is the root cause of any other device complaint
        check_sweep_job(cfg)
        share_machine(cfg)
        return train(cfg)
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = f"charrnn-train: error: {e}"
        print(message, file=sys.stderr)
        record_failure(cfg, message)
        if multirun and not (isinstance(e, SweepRefused) and launcher_target().endswith("BasicLauncher")):
            # The launcher goes on with the other jobs; at the end Hydra prints this line and exits 1.
            job = HydraConfig.get().job.num
            raise JobFailed(f"{message} [sweep job {job}; charrnn-report {Path(cfg.output_dir).parent} lists every job]") from None
        sys.exit(2)  # a single run; or a refused sweep, stopped at its first job (basic launcher: this process)
    except Exception as e:
        import traceback

        first = " ".join(str(e).split())[:400]  # the whole message on the first line (Hydra's span several)
        record_failure(cfg, f"charrnn-train: failed: {type(e).__name__}: {first}\n\n{traceback.format_exc()}")
        raise


class _HeldStderr:
    """stderr that holds what is written until a job starts.

    Hydra reports its own config errors (a misspelt key, an unknown option) in several lines
    before any job runs; :func:`cli` turns those into the one-sentence form of every other error.
    """

    active: "_HeldStderr | None" = None

    def __init__(self, real: Any) -> None:
        self.real, self.held = real, []

    def write(self, text: str) -> int:
        self.held.append(text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    @classmethod
    def release(cls) -> None:
        held, cls.active = cls.active, None
        if held is not None:
            sys.stderr = held.real
            held.real.write("".join(held.held))


def one_line(hydra_error: str) -> str:
    """Hydra's multi-line config error as one line, without its search-path and traceback hints."""
    kept: list[str] = []
    for raw in hydra_error.splitlines():
        line = raw.strip()
        if not line or line.startswith(("Set the environment variable HYDRA_FULL_ERROR", "Config search path", "provider=", "full_key:", "object_type=")):
            continue
        if raw.startswith("\t") and kept and kept[-1].startswith("Available options"):
            kept[-1] += (" " if kept[-1].endswith(":") else ", ") + line
        else:
            kept.append(line)
    return " ".join(kept)


def cli() -> None:
    """``charrnn-train``: :func:`main`, with Hydra's own config errors condensed to one line (exit 2)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()
        return
    held = _HeldStderr.active = _HeldStderr(sys.stderr)
    sys.stderr = held  # type: ignore[assignment]
    try:
        main()
    except SystemExit as e:
        if _HeldStderr.active is held and e.code not in (0, None):  # failed before any job started
            _HeldStderr.active, sys.stderr = None, held.real
            hint = "check the spelling against `charrnn-train --help`, which lists every group and key"
            print(f"charrnn-train: error: {one_line(''.join(held.held))}; {hint}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    finally:
        _HeldStderr.release()


if __name__ == "__main__":
    cli()
