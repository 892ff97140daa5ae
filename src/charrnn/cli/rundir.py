"""A run directory: how ``resume=`` decides a run's config and checkpoint, how a run dir is reopened.

Where Hydra puts a run dir is :mod:`charrnn.cli.resolvers` (its OmegaConf resolvers); importing this
module registers them too, so anything that composes the config with Hydra's compose API may import
either.

:func:`final_config` is the one place that decides which config a run trains with and which checkpoint
it continues from; everything after it (checks, launch decisions, training) reads only its result.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import charrnn.cli.resolvers  # noqa: F401  (registers the run-dir resolvers, for code that composes configs)
from charrnn.cli.jobs import Job
from charrnn.core.checkpoint import LoadedModel, load_model, read_checkpoint
from charrnn.core.errors import UserError


def read_run_file(path: Path) -> Any:
    """A run dir's ``.hydra/config.yaml`` or ``*.json``, with a damaged file reported in one sentence."""
    try:
        data = (
            OmegaConf.load(path) if path.suffix == ".yaml" else json.loads(path.read_text(encoding="utf-8"))
        )
        if not isinstance(data, (DictConfig, dict)):
            raise ValueError("not a mapping")
        return data
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{str(path)!r} is damaged ({reason}); restore it from a backup, or start a new run"
        ) from None


def final_config(cfg: DictConfig, job: Job) -> tuple[DictConfig, dict[str, Any] | None]:
    """``(config, checkpoint)`` of this run: the config it trains with and the checkpoint it continues from.

    ``resume=<run dir>`` takes that run's saved config, with this call's ``key=value`` overrides
    (e.g. a larger ``trainer.max_steps``) applied, and its ``last.ckpt``; ``ckpt_path=<file>``
    continues this config from that file; a requeued SLURM job, from its own ``last.ckpt``. The
    checkpoint is read weights-only: unsafe files are refused.
    """
    if cfg.get("resume"):
        cfg = resume_config(cfg, job.overrides)
    elif (last := requeued_checkpoint(cfg.output_dir)) is not None:
        cfg = OmegaConf.merge(
            cfg, {"ckpt_path": str(last)}
        )  # a requeued SLURM job continues its own run, in its own dir
    checkpoint = read_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    return cfg, checkpoint


def requeued_checkpoint(output_dir: Any) -> Path | None:
    """``last.ckpt`` of an earlier attempt of this SLURM job (preempted, timed out or ``scontrol requeue``d:
    SLURM then sets ``SLURM_RESTART_COUNT``), which the job continues from; None otherwise."""
    last = Path(str(output_dir)) / "checkpoints" / "last.ckpt"
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return last if restarts.isdigit() and int(restarts) > 0 and last.is_file() else None


def resume_config(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """``resume=<run dir>``: that run's saved config, continued in place from its ``last.ckpt``."""
    run = Path(str(cfg.resume)).expanduser()
    saved, last = run / ".hydra" / "config.yaml", run / "checkpoints" / "last.ckpt"
    if not saved.is_file() or not last.is_file():
        raise UserError(
            f"resume={str(run)!r} is not a run directory with .hydra/config.yaml and checkpoints/last.ckpt; "
            "pass a charrnn run directory"
        )
    resumed = read_run_file(saved)
    limits = OmegaConf.masked_copy(resumed.trainer, ["max_steps", "max_epochs", "max_time"])
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in ("resume", "output_dir") or "/" in key:
            continue
        if "." not in key and isinstance(OmegaConf.select(resumed, key), DictConfig):
            raise UserError(
                f"'{override}' switches a config group, which a resumed run cannot do; override single "
                "values such as trainer.max_steps=N"
            )
        OmegaConf.update(resumed, key.lstrip("+"), yaml_value(value), force_add=True)
    record = run / "run.json"
    finished = record.is_file() and read_run_file(record).get("status") == "done"
    if finished and limits == OmegaConf.masked_copy(resumed.trainer, list(limits)):
        raise UserError(
            f"run {str(run)!r} already finished; to train it further pass a larger trainer.max_steps / "
            "max_epochs / max_time with resume="
        )
    resumed.output_dir = cfg.output_dir
    resumed.ckpt_path = str(last)
    resumed.resume = None
    return resumed


def yaml_value(text: str) -> Any:
    return OmegaConf.create({"v": text}).v if text == "" else OmegaConf.create(f"v: {text}").v


def check_resume_matches(
    ckpt: dict[str, Any], vocab_chars: list[str], model_config: dict[str, Any], path: str
) -> None:
    """A checkpoint only resumes a run whose data and model have its vocabulary and shapes."""
    hparams = ckpt["hyper_parameters"]
    if list(hparams.get("vocab", "")) != vocab_chars:
        raise UserError(
            f"checkpoint {path!r} was trained on a vocabulary of {len(hparams.get('vocab', ''))} characters, "
            f"but this run's data has {len(vocab_chars)} different ones; resume with the data config the "
            "checkpoint was trained on"
        )
    saved = hparams.get("model", {})
    differing = sorted(k for k in set(saved) | set(model_config) if saved.get(k) != model_config.get(k))
    if differing:
        shown = ", ".join(
            f"model.{k}: checkpoint {saved.get(k)!r} vs config {model_config.get(k)!r}" for k in differing
        )
        raise UserError(
            f"checkpoint {path!r} holds a different model ({shown}); resume with the model config the "
            "checkpoint was trained with"
        )


@contextlib.contextmanager
def lock_run(out: Any) -> Iterator[None]:
    """Hold an OS lock on the run dir while this process trains in it (rank 0 only).

    A second ``resume=`` of a run that is still training is refused in one sentence; the lock is
    the kernel's, so a crashed or killed process frees it.
    """
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        yield
        return
    with open(Path(str(out)) / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"run {str(out)!r} is being trained by another process right now; wait for it to end (or "
                "stop it), then resume="
            ) from None
        yield


def check_same_corpus(out: Path, corpus: dict[str, Any], allowed: bool) -> None:
    """A resumed run continues on the text it started with, unless ``allow_corpus_change=true``."""
    record = out / "run.json"
    before = (read_run_file(record).get("corpus") or {}).get("sha256") if record.is_file() else None
    if before and before != corpus["sha256"] and not allowed:
        raise UserError(
            f"the corpus changed since this run started (sha256 {before} then, {corpus['sha256']} now); "
            f"resume on the original text, or pass allow_corpus_change=true to continue on the new one"
        )


@dataclass
class LoadedRun(LoadedModel):
    """A trained model, with the run's resolved Hydra config when its run dir has one."""

    config: DictConfig | None = None


def load_run(path: str | Path, device: Any = "cpu") -> LoadedRun:
    """The model of a run directory or checkpoint file (weights only, eval mode) and its run's config."""
    loaded = load_model(path, device)
    run = LoadedRun(loaded.model, loaded.vocab, loaded.checkpoint_path, loaded.checkpoint)
    if run.run_dir is not None and (run.run_dir / ".hydra" / "config.yaml").is_file():
        run.config = read_run_file(run.run_dir / ".hydra" / "config.yaml")
    return run
