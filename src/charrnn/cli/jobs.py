"""A training job as its launcher runs it: what Hydra says about the job, and its share of the machine.

The entry layer (:mod:`charrnn.cli.train`) reads Hydra's runtime config once into a :class:`Job`;
everything below it gets the job passed in and never reads ``HydraConfig`` itself, so a test can
make a ``Job`` by hand and call the same code in-process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from charrnn.core.errors import UserError


@dataclass(frozen=True)
class Job:
    """This process's job: its command-line overrides and, in a sweep (``-m``), its launcher and number."""

    overrides: tuple[str, ...] = ()
    launcher: str = ""  # the launcher's ``_target_`` in a sweep, "" for a single run
    n_jobs: int | None = None  # jobs the launcher runs at once (joblib)
    cpus_per_task: int | None = None  # cores each job was given (submitit)
    num: int | None = None  # the job's number in its sweep
    tasks_per_node: int = (
        1  # SLURM tasks (= DDP ranks SLURM starts) per node of the job (hydra/launcher=slurm)
    )
    nodes: int = 1  # nodes per SLURM job

    @property
    def in_sweep(self) -> bool:
        return bool(self.launcher)

    def launched_by(self, name: str) -> bool:
        """Whether the launcher's class path holds ``name`` (case-insensitive): "joblib", "submitit", "Slurm",
        ..."""
        return name.lower() in self.launcher.lower()


class SweepRefused(UserError):
    """A sweep that cannot run as asked at all: refused as a whole at its first job."""


class JobFailed(CompactHydraException):
    """A sweep job's user error, re-raised so the launcher records the job as failed and goes on;
    Hydra prints a compact exception as its one message, not a traceback. ``shown``: the job printed
    it on the stderr the sweep shares, so charrnn-train does not print it again."""

    shown = False


def share_machine(cfg: DictConfig, job: Job) -> DictConfig:
    """A sweep job running beside others on this machine takes its share of the cores; returns the config it
    trains with.

    Joblib: ``cores // n_jobs`` torch threads each, and DataLoader workers off (loky's workers
    cannot fork them reliably). Submitit: ``cpus_per_task`` threads when it is set.
    """
    import torch  # here, not at the top: the entry layer imports this module before any config is composed

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if job.launched_by("joblib"):
        n_jobs = job.n_jobs or 1
        parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
        torch.set_num_threads(max(1, cores // parallel))
        if int(cfg.data.get("num_workers", 0)) > 0:
            print(
                f"charrnn-train: note: data.num_workers={cfg.data.num_workers} set to 0 under the joblib "
                "launcher",
                file=sys.stderr,
            )
            cfg = OmegaConf.merge(cfg, {"data": {"num_workers": 0}})
    elif job.launched_by("submitit") and job.cpus_per_task:
        torch.set_num_threads(int(job.cpus_per_task))
    return cfg
