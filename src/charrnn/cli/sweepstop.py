"""SIGTERM or SIGINT to a sweep whose jobs run in other processes of this machine: every job saves and stops.

Under the basic launcher a sweep job runs in the sweep process, where its :class:`StopOnSignal` gets
the signal itself. Under ``hydra/launcher=parallel`` (joblib's loky workers) and ``processes``
(submitit's local executor) the jobs run in other processes: a signal sent to the sweep process alone
ended it at once and left its jobs training on as orphans. While such a sweep runs, the Hydra callback
:class:`StopJobsOnSignal` (``hydra.callbacks`` in conf/hydra/default.yaml) has the sweep process
handle both signals itself:

1. it marks the sweep as stopping, in a private control dir whose path every job process inherits
   (``CHARRNN_SWEEP_CONTROL``): a job that starts from then on stops before it trains;
2. it sends SIGTERM on to every job process registered there (a job registers its pid while its
   own StopOnSignal handles signals, :func:`registered`), which saves ``last.ckpt`` at its next step
   and ends as it would alone, without a line of its own (:func:`stopping`);
3. once no registered job is left it raises :class:`SweepStopped`; the launcher ends its idle worker
   processes on the way out, and ``charrnn-train`` prints one line with the command that resumes the
   whole sweep, and exits 128 + the signal number.

A second signal while the jobs save is sent on to them too (a second Ctrl-C stops them at once).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

ENV = "CHARRNN_SWEEP_CONTROL"
SIGNALS = (signal.SIGTERM, signal.SIGINT)
POLL_SECONDS = 0.05
CHILDREN_GRACE_SECONDS = 10.0


class SweepStopped(BaseException):
    """The sweep was stopped by a signal after its running jobs saved; a BaseException, so that no
    launcher or sweeper takes it for a failed job."""

    def __init__(self, signum: int, saved: int, sweep: Path) -> None:
        from charrnn.cli.commands import sweep_resume_command

        self.exit_code = 128 + int(signum)
        name, command = signal.Signals(signum).name, sweep_resume_command(sweep)
        super().__init__(
            f"stopped by {name}: {saved} running job(s) saved and stopped; continue with: {command}"
        )


def local_processes(launcher: str) -> bool:
    """Whether a launcher (its ``_target_``) runs the jobs in other processes of this machine."""
    return launcher.endswith(("JoblibLauncher", "submitit_launcher.LocalLauncher"))


def alive(pid: int) -> bool:
    """A process that runs (not a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def children() -> list[int]:
    """This process's live child processes."""
    me, found = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


class SweepControl:
    """The sweep process's side: the control dir, the signal handlers, and the stop."""

    def __init__(self, sweep: Path, wait_for_children: bool) -> None:
        self.sweep, self.wait_for_children = sweep, wait_for_children
        self.dir = Path(tempfile.mkdtemp(prefix="charrnn-sweep-"))
        (self.dir / "jobs").mkdir()
        self.received: int | None = None
        self.signalled: set[tuple[int, str]] = set()  # (pid, job dir) of each job sent the stop
        self.previous = {sig: signal.signal(sig, self.handle) for sig in SIGNALS}
        os.environ[ENV] = str(self.dir)

    def close(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        os.environ.pop(ENV, None)
        shutil.rmtree(self.dir, ignore_errors=True)

    def jobs(self) -> list[tuple[int, str]]:
        """The registered jobs whose process still runs: (pid, job dir)."""
        found = []
        for entry in (self.dir / "jobs").iterdir():
            try:
                pid, out = int(entry.name), entry.read_text()
            except (OSError, ValueError):
                continue  # unregistered meanwhile
            if alive(pid):
                found.append((pid, out))
        return found

    def forward(self, signum: int, again: bool = False) -> int:
        """Send ``signum`` to each running job not sent one yet (``again``: to every one); how many run."""
        running = self.jobs()
        for job in running:
            if again or job not in self.signalled:
                self.signalled.add(job)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job[0], signum)
        return len(running)

    def handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # the first call is waiting for the jobs: send this one on too
            self.forward(signum, again=True)
            return
        self.received = signum
        (self.dir / "stop").write_text(str(int(signum)))  # before forwarding: no job starts after this
        # SIGTERM, whichever came: a Ctrl-C in a terminal reaches the jobs too (their process group), and a
        # second SIGINT would tell a job to stop at once, without its checkpoint.
        while self.forward(signal.SIGTERM):
            time.sleep(POLL_SECONDS)
        if self.wait_for_children:  # submitit's controllers end once their job has
            deadline = time.monotonic() + CHILDREN_GRACE_SECONDS
            while children() and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
        raise SweepStopped(signum, self.saved(), self.sweep)

    def saved(self) -> int:
        """Jobs this stop reached whose run.json says stopped with a checkpoint."""
        from charrnn.cli.rundir import read_run_file

        count = 0
        for out in {out for _, out in self.signalled}:
            record = Path(out) / "run.json"
            with contextlib.suppress(Exception):
                data = read_run_file(record) if record.is_file() else {}
                count += data.get("status") == "stopped" and data.get("checkpoint") is not None
        return count


_ACTIVE: SweepControl | None = None


def release() -> None:
    """Put the sweep process's signal handling back and remove the control dir (at the sweep's end)."""
    global _ACTIVE
    if _ACTIVE is not None:
        _ACTIVE.close()
        _ACTIVE = None


class StopJobsOnSignal(Callback):
    """Hydra callback: in the sweep process of a local multi-process launcher, SIGTERM and SIGINT stop
    every running job with its checkpoint, then the sweep (see the module's docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _ACTIVE
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if (
            _ACTIVE is None
            and local_processes(launcher)
            and threading.current_thread() is threading.main_thread()
        ):
            sweep = Path(str(config.hydra.sweep.dir)).absolute()
            _ACTIVE = SweepControl(sweep, wait_for_children=not launcher.endswith("JoblibLauncher"))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release()


# --- the job's side ------------------------------------------------------------------------------


def ignore_stops_between_jobs() -> None:
    """In a joblib worker of a sweep this module watches: SIGTERM and SIGINT ignored whenever no job of
    this worker handles them (the job's :class:`StopOnSignal` puts this back as it ends).

    A signal to the sweep's whole process group (Ctrl-C, ``kill -- -PGID``) reaches every loky worker.
    One between jobs, with the default action, ended at once; loky then took its pool for broken and
    SIGKILLed every other worker, jobs saving their stop included, whose run.json stayed ``running``
    with no checkpoint, and the sweep ended in a traceback. The sweep process sends each running job
    the stop itself (:class:`SweepControl`); an idle worker has nothing to stop.
    """
    if os.environ.get(ENV) and threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def registered(out: Any) -> Iterator[None]:
    """Register this job process with its sweep's control dir (if it has one) for the ``with`` block."""
    control = os.environ.get(ENV)
    entry = Path(control) / "jobs" / str(os.getpid()) if control else None
    try:
        if entry is not None:
            entry.write_text(str(out))
    except OSError:  # the sweep has ended (its control dir is gone)
        entry = None
    try:
        yield
    finally:
        if entry is not None:
            entry.unlink(missing_ok=True)


def stopping() -> int | None:
    """The signal that stopped this job's sweep, or None (not stopped, or no sweep of other processes)."""
    control = os.environ.get(ENV)
    if not control:
        return None
    try:
        return int((Path(control) / "stop").read_text())
    except (OSError, ValueError):
        return None
