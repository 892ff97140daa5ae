"""``charrnn-train``: compose the Hydra config, instantiate, fit, test, write metrics.json.

Read top to bottom, :func:`train` is the whole training path: data -> vocabulary -> model ->
LightningModule -> Trainer (loggers, callbacks) -> fit -> test on the best checkpoint -> summary.
"""

from __future__ import annotations

import hashlib
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
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from charrnn.checks import check_config
from charrnn.errors import UserError
from charrnn.generate import generate
from charrnn.module import CharRNNModule
from charrnn.provenance import RunRecord, corpus_info, write_json
from charrnn.checkpoint_io import SafeCheckpointIO
from charrnn.runs import read_checkpoint

# A short random suffix for run directories, so two runs started in the same second never share
# one. Cached: every use within one config resolves to the same value.
OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True, replace=True)


def job_dirname(num: Any, overrides: Any, limit: int = 200) -> str:
    """``<num>_<overrides>`` for a sweep job's dir, shortened with a hash to stay a legal file name."""
    name, overrides = f"{num}_{overrides}", str(overrides)
    if len(name.encode()) <= limit:
        return name
    head = overrides.encode()[: limit - 20].decode(errors="ignore")
    return f"{num}_{head}~{hashlib.sha1(overrides.encode()).hexdigest()[:8]}"


OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
# resume=<run dir> continues that run in place; its own .hydra/ (the original config) is kept and
# the resuming call's config goes to .hydra/resume-<id>/. A path that is no run dir gets a new
# dir (nothing is written into it) and train() reports the mistake.
def _resumable(resume: Any) -> bool:
    return bool(resume) and (Path(str(resume)) / ".hydra" / "config.yaml").is_file()


OmegaConf.register_new_resolver("run_dir", lambda resume, new: str(resume) if _resumable(resume) else new, replace=True)
OmegaConf.register_new_resolver("config_subdir", lambda resume, rid: f".hydra/resume-{rid}" if _resumable(resume) else ".hydra", replace=True)

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


def trainer_processes(trainer_cfg: DictConfig) -> int:
    """How many processes per node the trainer config starts (Lightning launches one per device)."""
    devices, accelerator = trainer_cfg.get("devices", 1), str(trainer_cfg.get("accelerator", "cpu"))
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text in ("-1", "auto"):
        if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
            return torch.cuda.device_count()
        return (os.cpu_count() or 1) if text == "-1" and accelerator == "cpu" else 1
    return int(text) if text.lstrip("-").isdigit() else 1


def launcher_target() -> str:
    """The Hydra launcher of this job (``...BasicLauncher``, ``...JoblibLauncher``, ...); "" outside multirun."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    return str(HydraConfig.get().launcher.get("_target_", ""))


class SweepRefused(UserError):
    """A sweep that cannot run as asked at all: refused as a whole at its first job."""


class JobFailed(CompactHydraException):
    """A sweep job's user error, re-raised so the launcher records the job as failed and goes on;
    Hydra prints a compact exception as its one message, not a traceback."""


def check_sweep_job(cfg: DictConfig) -> None:
    """Refuse a multi-process (DDP) trainer inside a sweep that Lightning would break, before any work.

    Lightning's script launcher starts ranks 1.. by re-running this command line, which for
    ``-m`` is the whole sweep again, in new directories (hydra#2070); SLURM (hydra/launcher=slurm)
    starts the ranks itself, so that is the one launcher where sweep jobs may use several devices.
    """
    target = launcher_target()
    processes = trainer_processes(cfg.trainer) * int(cfg.trainer.get("num_nodes", 1) or 1)
    if target and processes > 1 and not target.endswith("SlurmLauncher"):
        raise SweepRefused(
            f"a sweep (-m) job cannot start {processes} DDP processes with this launcher, because Lightning would re-run the "
            f"whole sweep in every extra rank; run each DDP job on its own without -m, or sweep with hydra/launcher=slurm "
            f"(one SLURM task per device)"
        )
    if processes > 1 and cfg.data.get("batching") == "stateful" and cfg.trainer.get("use_distributed_sampler", True):
        raise UserError(
            "DDP with data.batching=stateful needs trainer.use_distributed_sampler=false (trainer=ddp and trainer=ddp_cpu set it): "
            "Lightning's sampler would deal each stream's windows to different ranks and break the carried hidden state"
        )


def share_machine(cfg: DictConfig) -> None:
    """A sweep job running beside others on this machine takes its share of the cores.

    Joblib: ``cores // n_jobs`` torch threads each, and DataLoader workers off (loky's workers
    cannot fork them reliably). Submitit: ``cpus_per_task`` threads when it is set.
    """
    target, launcher = launcher_target(), HydraConfig.get().launcher if HydraConfig.initialized() else {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if "joblib" in target.lower():
        n_jobs = int(launcher.get("n_jobs") or 1)
        parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
        torch.set_num_threads(max(1, cores // parallel))
        if int(cfg.data.get("num_workers", 0)) > 0:
            print(f"charrnn-train: note: data.num_workers={cfg.data.num_workers} set to 0 under the joblib launcher", file=sys.stderr)
            cfg.data.num_workers = 0
    elif "submitit" in target.lower() and launcher.get("cpus_per_task"):
        torch.set_num_threads(int(launcher.cpus_per_task))


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


def resume_config(cfg: DictConfig) -> DictConfig:
    """``resume=<run dir>``: that run's saved config, continued in place from its ``last.ckpt``.

    ``key=value`` overrides given with ``resume=`` (e.g. a larger ``trainer.max_steps``) still apply.
    """
    run = Path(str(cfg.resume)).expanduser()
    saved, last = run / ".hydra" / "config.yaml", run / "checkpoints" / "last.ckpt"
    if not saved.is_file() or not last.is_file():
        raise UserError(f"resume={str(run)!r} is not a run directory with .hydra/config.yaml and checkpoints/last.ckpt; pass a charrnn run directory")
    resumed = OmegaConf.load(saved)
    limits = OmegaConf.masked_copy(resumed.trainer, ["max_steps", "max_epochs", "max_time"])
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in ("resume", "output_dir") or "/" in key:
            continue
        if "." not in key and OmegaConf.select(resumed, key) is not None and isinstance(OmegaConf.select(resumed, key), DictConfig):
            raise UserError(f"'{override}' switches a config group, which a resumed run cannot do; override single values such as trainer.max_steps=N")
        OmegaConf.update(resumed, key.lstrip("+"), yaml_value(value), force_add=True)
    record = run / "run.json"
    if record.is_file() and json.loads(record.read_text()).get("status") == "done" and limits == OmegaConf.masked_copy(resumed.trainer, list(limits)):
        raise UserError(f"run {str(run)!r} already finished; to train it further pass a larger trainer.max_steps / max_epochs / max_time with resume=")
    resumed.output_dir = cfg.output_dir
    resumed.ckpt_path = str(last)
    resumed.resume = None
    return resumed


def yaml_value(text: str) -> Any:
    return OmegaConf.create({"v": text}).v if text == "" else OmegaConf.create(f"v: {text}").v


def check_resume_matches(ckpt: dict[str, Any], vocab_chars: list[str], model_config: dict[str, Any], path: str) -> None:
    """A checkpoint only resumes a run whose data and model have its vocabulary and shapes."""
    hparams = ckpt["hyper_parameters"]
    if list(hparams.get("vocab", "")) != vocab_chars:
        raise UserError(
            f"checkpoint {path!r} was trained on a vocabulary of {len(hparams.get('vocab', ''))} characters, but this run's data has "
            f"{len(vocab_chars)} different ones; resume with the data config the checkpoint was trained on"
        )
    saved = hparams.get("model", {})
    differing = sorted(k for k in set(saved) | set(model_config) if saved.get(k) != model_config.get(k))
    if differing:
        shown = ", ".join(f"model.{k}: checkpoint {saved.get(k)!r} vs config {model_config.get(k)!r}" for k in differing)
        raise UserError(f"checkpoint {path!r} holds a different model ({shown}); resume with the model config the checkpoint was trained with")


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

    trainer_cfg = cfg.trainer.copy()
    interval, max_steps = trainer_cfg.get("val_check_interval"), trainer_cfg.get("max_steps", -1)
    if isinstance(interval, int) and max_steps and max_steps > 0 and interval > max_steps:
        trainer_cfg.val_check_interval = max_steps  # Lightning refuses an interval longer than the run
    loggers = [build(c) for c in cfg.get("logger", {}).values()] if cfg.get("logger") else []
    callbacks = [build(c) for c in cfg.get("callbacks", {}).values()] if cfg.get("callbacks") else []
    trainer: L.Trainer = build(trainer_cfg, logger=loggers or False, callbacks=callbacks, plugins=[SafeCheckpointIO()])
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
        print(f"throughput:    {metrics['train_chars_per_second']} chars/s over {trainer.global_step} steps")
        print(f"watch it:      tensorboard --logdir {out}")
    return best_bpc


@hydra.main(version_base="1.3", config_path="pkg://charrnn.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Console entry point: user mistakes end in one sentence on stderr and exit code 2.

    In a sweep (-m) a failed job is recorded in its ``error.txt`` and re-raised, so the launcher
    goes on with the other jobs and Hydra exits non-zero at the end.
    """
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


if __name__ == "__main__":
    main()
