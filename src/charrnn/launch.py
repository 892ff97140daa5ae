"""Where and how a training job runs: devices it may ask for, sweeps it may run in, cores it may use.

Checks here run before any work, so a request the machine or the launcher cannot serve ends in
one sentence instead of a half-started run (or, for DDP inside a sweep, a silently wrong one).
"""

from __future__ import annotations

import os
import sys

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from charrnn.errors import UserError


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
