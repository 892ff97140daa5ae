"""A training job as its launcher runs it: which launcher, how many processes, its share of the machine."""

from __future__ import annotations

import os
import sys

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from charrnn.core.errors import UserError


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
