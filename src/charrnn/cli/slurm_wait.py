"""Waiting for a SLURM sweep's jobs, and saying in one line how one ended without a result.

:func:`wait_for` polls ``sacct`` itself (submitit's poll slows to once in 5 minutes); :class:`SignalGuard`
turns SIGINT/SIGTERM into :class:`Interrupted` once the job ids are known, so the launcher can cancel
them; :func:`launch_failure_line` and :func:`job_line` make submitit's errors and SLURM's end states one
line naming the job, its state and its log. No torch: Hydra's plugin scan imports this at every start.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HINTS = {
    "TIMEOUT": "it ran past hydra.launcher.timeout_min",
    "OUT_OF_MEMORY": "it ran out of memory",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "it was preempted",
    "BOOT_FAIL": "its node did not boot",
}


def reason(state: str) -> str:
    """A SLURM end state made readable: ``TIMEOUT`` -> ``TIMEOUT: it ran past hydra.launcher.timeout_min``."""
    word = state.split()[0] if state else ""
    return f"{state}: {HINTS[word]}" if word in HINTS else state or "ended without a result"


def job_line(job_id: str, state: str, log_path: Any, num: int | None = None) -> str:
    """``sweep job 1 (SLURM job 7_1) was cancelled: CANCELLED by 0; log: ...``; without ``num``: ``job 7_1
    ...`` (an array task ``<array>_<index>``, whose index is the sweep job's number within its batch)."""
    who = f"sweep job {num} (SLURM job {job_id})" if num is not None else f"job {job_id}"
    what = "was cancelled" if state.startswith("CANCELLED") else "failed"
    return f"{who} {what}: {reason(state)}; log: {log_path}"


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
    """SIGINT/SIGTERM under a :class:`SignalGuard`; a BaseException, so submitit's ``except Exception`` lets
    it by."""


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
