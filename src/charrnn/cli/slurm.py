"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, made safe on a real cluster.

It refuses in one sentence, before submitting, a request no node of the partition can hold (``sinfo``;
SLURM itself would leave too many CPUs PENDING for ever); ``gpus_per_node: null`` follows the trainer. A
resumed sweep first waits for the jobs of its earlier launch still in SLURM (:mod:`charrnn.cli.slurm_alive`).
It waits for every job, polling ``sacct`` itself (submitit's poll slows to once in 5 minutes), gives each job
that ended without a result (scancel, timeout, ...) an ``error.txt`` and a one-line failure, and cancels
the array when interrupted (Ctrl-C, SIGTERM). Hydra builds launchers only from the plugins its scan of the
``hydra_plugins`` namespace finds: :mod:`hydra_plugins.charrnn_slurm_launcher` names this class for it (a
name holding "submitit" and ending in "SlurmLauncher", as :mod:`charrnn.cli.jobs` and the checks expect).
This module imports no torch: Hydra's plugin scan imports it at every start.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf, open_dict

from charrnn.cli.slurm_alive import wait_for_earlier_launch
from charrnn.cli.slurm_resources import (
    LEAST,
    Node,
    check_numbers,
    check_request,
    gres_gpus,
    partition_nodes,
    trainer_gpus,
)
from charrnn.cli.slurm_wait import (
    HINTS,
    Interrupted,
    SignalGuard,
    job_line,
    launch_failure_line,
    log_of,
    reason,
    wait_for,
)

# The launcher's helpers live in slurm_resources (checks against the partition) and slurm_wait (waiting,
# one-line failures); their names stay importable from here.
__all__ = [
    "HINTS",
    "LEAST",
    "Interrupted",
    "Node",
    "SignalGuard",
    "SubmititSlurmLauncher",
    "check_numbers",
    "check_request",
    "gres_gpus",
    "job_line",
    "launch_failure_line",
    "log_of",
    "partition_nodes",
    "reason",
    "trainer_gpus",
    "wait_for",
]
log = logging.getLogger(__name__)


class SubmititSlurmLauncher(SlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher: checked against the partition, waited for, cancelled on
    interrupt."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.own_arrays: set[str] = set()  # the arrays this process submitted (an Optuna sweep: one a batch)

    def __call__(self, sweep_overrides: list[str], *args: Any) -> JobReturn:
        """One SLURM task of a job (submitit runs this in each). In a DDP job (tasks_per_node x nodes > 1)
        each task is one rank: Lightning's SLURMEnvironment reads SLURM_PROCID and starts no processes, and
        every rank trains in the job dir Hydra composes, where rank 0 keeps the records. Ranks 1.. save no
        Hydra config there (it would race rank 0's into a ``.hydra/resume-*`` dir) and log to
        ``<job name>_ddp_process_<rank>.log``, as the ranks Lightning starts on one machine do."""
        assert self.config is not None
        rank = os.environ.get("SLURM_PROCID", "0")
        if rank.isdigit() and int(rank) > 0:
            name = f"{self.config.hydra.job.name}_ddp_process_{rank}"
            sweep_overrides = [*sweep_overrides, f"hydra.job.name={name}", "hydra.output_subdir=null"]
        return super().__call__(sweep_overrides, *args)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        check_numbers(self.params)  # first: no SLURM command is needed to refuse a nonsense number
        partition, nodes = partition_nodes(self.params.get("partition"))
        check_request(
            self.params, partition, nodes, self._gpus_for_jobs(job_overrides, any(n.gpus for n in nodes))
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"SLURM sweep output dir: {sweep_dir} (partition {partition})")
        nums = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
        for num, overrides in zip(nums, job_overrides):
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
        # A resumed sweep whose earlier launch died: its jobs still in SLURM end first (no second copy).
        wait_for_earlier_launch(self.params["submitit_folder"], self.own_arrays, sweep_dir)
        args = [
            (list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state())
            for n, o in zip(nums, job_overrides)
        ]
        try:
            with SignalGuard() as guard:
                with contextlib.redirect_stderr(
                    io.StringIO()
                ):  # submitit prints sbatch's refusal, then raises it
                    jobs = self._executor().map_array(self, *zip(*args))
                self.own_arrays.add(jobs[0].job_id.split("_")[0])
                guard.arm()
                wait_for(jobs)
        except Interrupted as e:
            self._cancel(jobs, job_overrides, nums, signal.Signals(e.args[0]).name)
            raise SystemExit(128 + e.args[0]) from None
        return [self._job_return(job, list(o), num) for job, o, num in zip(jobs, job_overrides, nums)]

    def _cancel(
        self, jobs: Sequence[Any], job_overrides: Sequence[Sequence[str]], nums: list[int], name: str
    ) -> None:
        """scancel the array, record its unfinished jobs that started (quick: no config to compose), say
        so."""
        array = jobs[0].job_id.split("_")[0]
        subprocess.run(["scancel", array], capture_output=True, timeout=30)
        for job, overrides, num in zip(jobs, job_overrides, nums):
            if not job.paths.result_pickle.exists():
                why = f"the launcher got {name} and cancelled SLURM job {array}"
                self._record(
                    overrides,
                    num,
                    f"cancelled: {why} (SLURM job {job.job_id}); log: {log_of(job.paths)}",
                    True,
                )
        print(
            f"charrnn-train: {name}: cancelled SLURM job {array} ({len(jobs)} sweep jobs); charrnn-report "
            f"{self.config.hydra.sweep.dir} lists them",
            file=sys.stderr,
        )  # type: ignore[union-attr]

    def _gpus_for_jobs(self, job_overrides: Sequence[Sequence[str]], partition_has_gpus: bool) -> str:
        """``gpus_per_node: null`` follows the trainer (the most any job needs); returns how, for the
        check."""
        if self.params.get("gpus_per_node") is not None:
            return ""
        assert self.config is not None and self.hydra_context is not None
        tasks, found = int(self.params.get("tasks_per_node") or 1), {}
        keyed = {
            tuple(o for o in ovr if o.lstrip("+~").startswith(("trainer", "experiment"))): ovr
            for ovr in job_overrides
        }
        load = (
            self.hydra_context.config_loader.load_sweep_config
        )  # only where jobs differ in trainer (slow: ~0.3 s)
        for overrides in keyed.values():
            trainer = (self.config if len(keyed) == 1 else load(self.config, list(overrides))).get(
                "trainer"
            ) or {}
            found[trainer_gpus(trainer, tasks, partition_has_gpus)] = (
                f"trainer.accelerator={trainer.get('accelerator')} devices={trainer.get('devices')}"
            )
        self.params["gpus_per_node"] = max(found) or None  # --gpus-per-node=0 fails where nodes have no GRES
        return f"the trainer ({found[max(found)]}, which hydra.launcher.gpus_per_node=null follows)"

    def _executor(self) -> Any:
        import submitit

        executor = submitit.AutoExecutor(
            folder=self.params["submitit_folder"],
            cluster="slurm",
            slurm_max_num_timeout=self.params.get("max_num_timeout", 0),
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in base else f"slurm_{k}": v
                for k, v in self.params.items()
                if k not in ("submitit_folder", "max_num_timeout")
            }
        )
        return executor

    def _job_return(self, job: Any, overrides: list[str], num: int) -> JobReturn:
        """The job's own JobReturn; for a job that ended without one, error.txt and a failed JobReturn."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        from charrnn.cli.jobs import JobFailed  # torch: not at import, which Hydra's plugin scan does

        state = job.watcher.get_state(job.job_id, mode="cache")
        try:
            if not job.paths.result_pickle.exists() and not state.startswith(("COMPLETED", "FAILED")):
                # Cancelled, timed out, node lost: no result will come (submitit would wait 15 s for one).
                # A result already written counts whatever sacct says: a job that just wrote it is still
                # RUNNING.
                raise UncompletedJobError(f"job {job.job_id} ended without a result (state: {state})")
            return job.task(0).result()  # a DDP job's rank 0 (every task runs the job; rank 0 reports)
        except UncompletedJobError as e:
            line = (isinstance(e, FailedJobError) and launch_failure_line(e)) or job_line(
                job.job_id, state, log_of(job.paths), num
            )
            word = "cancelled" if state.startswith("CANCELLED") else "failed"
            self._record(
                overrides, num, f"{word}: {reason(state)} (SLURM job {job.job_id}); log: {log_of(job.paths)}"
            )
            failed = JobFailed(f"{line}; charrnn-report {self.config.hydra.sweep.dir} lists every job")  # type: ignore[union-attr]
            return JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=failed)

    def _record(
        self, overrides: Sequence[str], num: int, text: str, started_only: bool = False
    ) -> Path | None:
        """``error.txt`` in the job's dir (one the job wrote stays), and ``.hydra/overrides.yaml`` for a job
        that never started, so that charrnn-report lists it (with ``started_only``: none). Returns the job
        dir."""
        assert self.config is not None and self.hydra_context is not None
        made = [
            p
            for p in Path(str(self.config.hydra.sweep.dir)).glob(f"{num}_*")
            if (p / ".hydra" / "overrides.yaml").is_file()
        ]
        if len(made) != 1 and started_only:
            return None
        if len(made) != 1:  # the dir the job would have made, composed as the job does it
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg.hydra.job):
                cfg.hydra.job.num = num
            made = [Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)]
        job_dir = made[0]
        (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        if not (job_dir / ".hydra" / "overrides.yaml").exists():
            OmegaConf.save(OmegaConf.create(list(overrides)), job_dir / ".hydra" / "overrides.yaml")
        if not (job_dir / "error.txt").exists():
            (job_dir / "error.txt").write_text(f"charrnn-train: {text}\n")
        return job_dir
