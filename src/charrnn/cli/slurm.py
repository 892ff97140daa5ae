"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, made safe on a real cluster.

It refuses in one sentence, before submitting, a request no node of the partition can hold (``sinfo``;
SLURM itself would leave too many CPUs PENDING for ever); ``gpus_per_node: null`` follows the trainer. It
waits for every job, polling ``sacct`` itself (submitit's poll slows to once in 5 minutes), gives each job
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
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf, open_dict

from charrnn.core.errors import UserError

log = logging.getLogger(__name__)
HINTS = {
    "TIMEOUT": "it ran past hydra.launcher.timeout_min",
    "OUT_OF_MEMORY": "it ran out of memory",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "it was preempted",
    "BOOT_FAIL": "its node did not boot",
}


class Node(NamedTuple):
    name: str
    cpus: int
    mem_mb: int
    gpus: int


def gres_gpus(gres: str | None) -> int:
    """GPUs in a GRES string: ``gpu:4``, ``gpu:a100:2(S:0-1),gpu:v100:2`` -> 4; ``(null)`` -> 0."""
    return sum(int(n) for n in re.findall(r"\bgpu(?::[^:,()]+)?:(\d+)", str(gres or "")))


def partition_nodes(partition: str | None) -> tuple[str, list[Node]]:
    """The partition (the cluster's default for None) and its nodes, each with its CPUs, memory and GPUs."""
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        raise UserError(
            "hydra/launcher=slurm needs SLURM's commands and sinfo is not on PATH; run the sweep "
            "on a SLURM login node, or use hydra/launcher=processes on this machine"
        ) from None
    except subprocess.TimeoutExpired:
        raise UserError(
            "SLURM does not answer: sinfo took over 30 s; check the cluster (scontrol ping)"
        ) from None
    if done.returncode != 0:
        raise UserError(
            f"SLURM does not answer: sinfo failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    rows = [line.split("|") for line in done.stdout.splitlines() if line.count("|") == 4]
    names = list(dict.fromkeys(r[1].rstrip("*") for r in rows))
    if partition is None:
        if not (default := [r[1].rstrip("*") for r in rows if r[1].endswith("*")]):
            raise UserError(
                f"SLURM has no default partition; set hydra.launcher.partition to one of: {', '.join(names)}"
            )
        partition = default[0]
    nodes = {
        r[0]: Node(r[0], int(r[2].rstrip("+")), int(r[3].rstrip("+")), gres_gpus(r[4]))
        for r in rows
        if r[1].rstrip("*") == partition
    }
    if not nodes:
        raise UserError(
            f"SLURM has no partition {partition!r} (hydra.launcher.partition); it has: {', '.join(names) or 'none'}"
        )
    return partition, list(nodes.values())


def trainer_gpus(trainer: Any, tasks_per_node: int, partition_has_gpus: bool) -> int:
    """GPUs per node a job's trainer uses: cpu -> 0; gpu -> its devices; ddp (devices -1) -> tasks_per_node;
    auto -> 1 where the partition has GPUs, else 0."""
    accelerator, devices = str(trainer.get("accelerator", "cpu")).lower(), trainer.get("devices", 1)
    if accelerator not in ("gpu", "cuda", "auto") or (accelerator == "auto" and not partition_has_gpus):
        return 0
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    return tasks_per_node if text in ("-1", "auto") else max(1, int(text)) if text.isdigit() else 1


# The launcher's numeric keys: the least each may be, and what it counts (null leaves a key to SLURM or submitit).
LEAST = {
    "timeout_min": (1, "minutes of wall time per job"),
    "nodes": (1, "nodes per job"),
    "tasks_per_node": (1, "tasks per node"),
    "cpus_per_task": (1, "CPUs per task"),
    "gpus_per_node": (0, "GPUs per node"),
    "gpus_per_task": (1, "GPUs per task"),
    "cpus_per_gpu": (1, "CPUs per GPU"),
    "mem_gb": (0, "GB of memory per node (0: all of a node's, as sbatch --mem=0)"),
    "array_parallelism": (1, "jobs running at once"),
    "signal_delay_s": (0, "seconds before the time limit"),
    "max_num_timeout": (0, "time-outs a job may be requeued after"),
}


def check_numbers(params: dict[str, Any]) -> None:
    """One :class:`UserError` sentence naming the first numeric ``hydra.launcher`` key whose value is nonsense
    (sbatch would refuse it only after submitting, exit 1, in its own words)."""
    for key, (least, what) in LEAST.items():
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            null = (
                " or null"
                if key not in ("timeout_min", "nodes", "tasks_per_node", "array_parallelism")
                else ""
            )
            raise UserError(
                f"hydra.launcher.{key}={value} is not a number of {what}; give a whole number >= {least}{null}"
            )


def check_request(params: dict[str, Any], partition: str, nodes: list[Node], gpu_source: str = "") -> None:
    """One :class:`UserError` sentence naming the resource when no node of the partition can hold a job."""
    tasks, cpt, mem_gb = (
        int(params.get("tasks_per_node") or 1),
        int(params.get("cpus_per_task") or 1),
        params.get("mem_gb"),
    )
    cpus, mem_mb = tasks * cpt, None if mem_gb is None else float(mem_gb) * 1024  # sbatch --mem=<n>GB: GiB
    gpus = max(
        int(params.get("gpus_per_node") or 0),
        int(params.get("gpus_per_task") or 0) * tasks,
        gres_gpus(params.get("gres")),
        gres_gpus((params.get("additional_parameters") or {}).get("gres")),
    )
    part, fix = f"SLURM partition {partition!r}", "choose another hydra.launcher.partition"
    if cpus > (most := max(n.cpus for n in nodes)):
        raise UserError(
            f"hydra.launcher.cpus_per_task={cpt} x tasks_per_node={tasks} asks for {cpus} CPUs on one node, "
            f"but the largest node of {part} has {most}; lower hydra.launcher.cpus_per_task or {fix}"
        )
    if mem_mb is not None and mem_mb > (most := max(n.mem_mb for n in nodes)):
        raise UserError(
            f"hydra.launcher.mem_gb={mem_gb} asks for {mem_gb} GB of memory on one node, but the largest node "
            f"of {part} has {most / 1024:.1f} GB; lower hydra.launcher.mem_gb (null: the cluster's default) or {fix}"
        )
    if gpus > (most := max(n.gpus for n in nodes)):
        has, fix = (
            (f"at most {most} per node", fix)
            if most
            else (
                "none",
                "choose a GPU partition with hydra.launcher.partition or train on CPUs (trainer=cpu)",
            )
        )
        raise UserError(
            f"{gpu_source or f'hydra.launcher.gpus_per_node={gpus}'} asks for {gpus} GPU(s) on one node, "
            f"but {part} has {has}; {fix}"
        )
    fits = [n for n in nodes if n.cpus >= cpus and n.gpus >= gpus and (mem_mb is None or n.mem_mb >= mem_mb)]
    if len(fits) < (want := int(params.get("nodes") or 1)):
        mem = "the default memory" if mem_gb is None else f"{mem_gb} GB"
        raise UserError(
            f"hydra.launcher asks for {want} node(s) with {cpus} CPUs, {gpus} GPUs and {mem} each, "
            f"but {part} has {len(fits)} such node(s) of {len(nodes)}; ask for fewer or {fix}"
        )


def reason(state: str) -> str:
    """A SLURM end state made readable: ``TIMEOUT`` -> ``TIMEOUT: it ran past hydra.launcher.timeout_min``."""
    word = state.split()[0] if state else ""
    return f"{state}: {HINTS[word]}" if word in HINTS else state or "ended without a result"


def job_line(job_id: str, state: str, log_path: Any, num: int | None = None) -> str:
    """``sweep job 1 (SLURM job 7_1) was cancelled: CANCELLED by 0; log: ...``; without ``num``: ``job 7_1 ...``
    (an array task ``<array>_<index>``, whose index is the sweep job's number within its batch)."""
    who = f"sweep job {num} (SLURM job {job_id})" if num is not None else f"job {job_id}"
    return f"{who} {'was cancelled' if state.startswith('CANCELLED') else 'failed'}: {reason(state)}; log: {log_path}"


def log_of(paths: Any) -> Path:
    """A submitit job's log: stderr (tracebacks, charrnn's one-line errors), else stdout."""
    return paths.stderr if Path(paths.stderr).exists() or not Path(paths.stdout).exists() else paths.stdout


def launch_failure_line(exc: BaseException) -> str | None:
    """submitit's UncompletedJobError / FailedJobError (a job ended without a result, a job's function raised,
    sbatch refused) as one line naming the job, its state and its log; None for any other exception."""
    try:
        from submitit.core.utils import UncompletedJobError
    except ImportError:
        return None
    if not isinstance(exc, UncompletedJobError):
        return None
    text = str(exc)
    if m := re.search(
        r"Job (\S+) \(task: \d+\) with path (\S+)", text
    ):  # no result: cancelled, killed, timed out
        state, result = re.search(r"\(state: ([^)]*)\)", text), Path(m.group(2))
        return job_line(
            m.group(1),
            state.group(1) if state else "",
            result.with_name(result.name.replace("_result.pkl", "_log.err")),
        )
    if logs := re.findall(r"^\s+- (\S+_log\.err)\s*$", text, re.M):  # the job's function raised
        trace = text.split("-" * 22)
        last = (
            next((ln.strip() for ln in reversed(trace[1].splitlines()) if ln.strip()), "")
            if len(trace) > 2
            else ""
        )
        job_id = Path(logs[0]).name.rsplit("_", 2)[0]  # <array>_<index>_<task>_log.err
        return f"job {job_id} failed: {last or 'its function raised'}; log: {logs[0]}"[:600]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or ["(no message)"]
    if errors := [ln for ln in lines if ln.startswith("sbatch:")]:
        return "SLURM refused the sweep: " + "; ".join(
            [ln for ln in errors if "error" in ln.lower()] or errors
        )
    return f"submitting or waiting for the sweep failed: {lines[0]}"


def wait_for(jobs: Sequence[Any], poll_s: float = 2.0) -> None:
    """Until every job has its result or sacct says it ended: one sacct call for the array every ``poll_s``
    seconds in the first minute, then every ``5 * poll_s``."""
    watcher, start = jobs[0].watcher, time.monotonic()
    while True:
        watcher.update()
        if all(j.paths.result_pickle.exists() or watcher.is_done(j.job_id, mode="cache") for j in jobs):
            return
        time.sleep(poll_s if time.monotonic() - start < 60 else 5 * poll_s)


class Interrupted(BaseException):
    """SIGINT/SIGTERM under a :class:`SignalGuard`; a BaseException, so submitit's ``except Exception`` lets it by."""


class SignalGuard:
    """SIGINT and SIGTERM, from ``__enter__`` to ``__exit__``, raise :class:`Interrupted` once :meth:`arm` is
    called (when the job ids are known); one that comes before is held until then."""

    def __enter__(self) -> SignalGuard:
        self.signum: int | None = None
        self.armed = False
        main = threading.current_thread() is threading.main_thread()
        self.old = (
            {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        )
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if self.armed:
            raise Interrupted(signum)

    def arm(self) -> None:
        self.armed = True
        if self.signum is not None:
            raise Interrupted(self.signum)

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self.old.items():
            signal.signal(s, handler)


class SubmititSlurmLauncher(SlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher: checked against the partition, waited for, cancelled on interrupt."""

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
            self.params, partition, nodes, self._settle_gpus(job_overrides, any(n.gpus for n in nodes))
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"SLURM sweep output dir: {sweep_dir} (partition {partition})")
        nums = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
        for num, overrides in zip(nums, job_overrides):
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
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
                guard.arm()
                wait_for(jobs)
        except Interrupted as e:
            self._cancel(jobs, job_overrides, nums, signal.Signals(e.args[0]).name)
            raise SystemExit(128 + e.args[0]) from None
        return [self._job_return(job, list(o), num) for job, o, num in zip(jobs, job_overrides, nums)]

    def _cancel(
        self, jobs: Sequence[Any], job_overrides: Sequence[Sequence[str]], nums: list[int], name: str
    ) -> None:
        """scancel the array, record its unfinished jobs that started (quick: no config to compose), say so."""
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

    def _settle_gpus(self, job_overrides: Sequence[Sequence[str]], partition_has_gpus: bool) -> str:
        """``gpus_per_node: null`` follows the trainer (the most any job needs); returns how, for the check."""
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
                # A result already written counts whatever sacct says: a job that just wrote it is still RUNNING.
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
        """``error.txt`` in the job's dir (one the job wrote stays), and ``.hydra/overrides.yaml`` for a job that
        never started, so that charrnn-report lists it (with ``started_only``: none). Returns the job dir."""
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
