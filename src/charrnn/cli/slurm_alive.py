"""The jobs of a SLURM sweep's earlier launch still in SLURM (``charrnn-train -m resume=<sweep dir>``).

When the process that launched a SLURM sweep dies (a lost login shell, ``kill -9``), its job array goes on:
pending jobs start, running ones train on. A resume that submitted those jobs again would train a second
copy in the same job dir. :func:`wait_for_earlier_launch` finds them, from the names submitit gives its
files and folders (``<submitit folder>/<array id>_<index>/``, ``<array id>_submission.sh``) and ``squeue``,
and waits, in one line, until none is left; the resume then submits every job, and those that finished
meanwhile count as done. Interrupted while waiting (Ctrl-C, SIGTERM), it cancels them, as the launcher does
its own array: they save ``last.ckpt`` and stop, and the next resume continues them. No torch.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path

from charrnn.cli.commands import PROG
from charrnn.cli.slurm_wait import Interrupted, SignalGuard
from charrnn.core.errors import UserError

LEADING_ID = re.compile(r"(\d+)(?=_|$)")  # 7_3, 7_3_0_log.err, 7_submission.sh, 7 -> 7


def submitit_dir(folder: str | Path) -> Path:
    """Where submitit keeps a launch's files: ``hydra.launcher.submitit_folder`` without its ``%j`` level."""
    path = Path(str(folder))
    return path.parent if "%" in path.name else path


def submitted_arrays(folder: Path) -> set[str]:
    """The SLURM job (array) ids submitit submitted into ``folder``: the leading number of its entries."""
    if not folder.is_dir():
        return set()
    return {m.group(1) for p in folder.iterdir() if (m := LEADING_ID.match(p.name))}


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def in_squeue(arrays: Collection[str]) -> list[str]:
    """The jobs (array tasks ``<array>_<index>``, one a line) of ``arrays`` that squeue still lists."""
    if not arrays:
        return []
    try:
        done = subprocess.run(
            ["squeue", "-h", "-r", "-u", user(), "-o", "%i"], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        raise UserError(
            "hydra/launcher=slurm needs SLURM's commands and squeue is not on PATH; resume the sweep "
            "on a SLURM login node"
        ) from None
    except subprocess.TimeoutExpired:
        raise UserError(
            "SLURM does not answer: squeue took over 30 s; check the cluster (scontrol ping)"
        ) from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise UserError(f"SLURM does not answer: squeue failed: {why}")
    ids = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return sorted((i for i in ids if i.partition("_")[0] in arrays), key=job_order)


def job_order(job_id: str) -> tuple[int, ...]:
    return tuple(int(n) if n.isdigit() else -1 for n in job_id.split("_"))


def wait_until_gone(
    alive: Callable[[], list[str]], poll_s: float = 2.0, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Until ``alive()`` is empty: every ``poll_s`` seconds in the first minute, then every ``15 * poll_s``
    (squeue is the controller's: a job that runs for hours is asked after twice a minute)."""
    start = time.monotonic()
    while alive():
        sleep(poll_s if time.monotonic() - start < 60 else 15 * poll_s)


def wait_for_earlier_launch(
    folder: str | Path, own: Collection[str], sweep_dir: Path, poll_s: float = 2.0
) -> None:
    """Wait for the jobs an earlier launch submitted into submitit's ``folder`` (not this process's ``own``
    arrays) while squeue lists them; cancel them and exit 128 + N on SIGINT/SIGTERM."""
    arrays = submitted_arrays(submitit_dir(folder)) - set(own)
    if not (alive := in_squeue(arrays)):
        return
    print(
        f"{PROG}: waiting for {len(alive)} SLURM job(s) of the earlier launch, still in SLURM: "
        + " ".join(alive),
        file=sys.stderr,
        flush=True,
    )
    try:
        with SignalGuard() as guard:
            guard.arm()
            wait_until_gone(lambda: in_squeue(arrays), poll_s)
    except Interrupted as e:
        left = in_squeue(arrays)
        if left:
            subprocess.run(["scancel", *left], capture_output=True, timeout=30)
        name = signal.Signals(e.args[0]).name
        print(
            f"{PROG}: {name}: cancelled SLURM job(s) {' '.join(left) or '(none left)'} of the earlier launch "
            f"(a running one saves last.ckpt); charrnn-train -m resume={shlex.quote(str(sweep_dir))} "
            "continues them",
            file=sys.stderr,
        )
        raise SystemExit(128 + e.args[0]) from None
