"""A real one-node SLURM with accounting for the tests (scripts/slurm/localhost.sh): the fixture
:func:`slurm_cluster` (registered once, in conftest.py) gives the cluster SLURM_CONF points to if it
answers, else one started here (as root on Debian, with slurm installed), shared by the run's pytest workers
and stopped by the last of them; else a skip saying how to get one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm" / "localhost.sh"
DEFAULT_CONF = "/tmp/charrnn-slurm/etc/slurm.conf"  # where `localhost.sh up` without a STATE_DIR puts it
HOW = (
    "sudo scripts/slurm/localhost.sh install && sudo scripts/slurm/localhost.sh up, "
    f"then export SLURM_CONF={DEFAULT_CONF}"
)
PARTITION = "debug"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}


class SlurmUnavailable(Exception):
    """No live cluster, and none can be started here; the message says how to get one."""


@dataclass
class SlurmCluster:
    conf: str  # the slurm.conf clients need, as SLURM_CONF
    state_dir: Path | None = None  # set when start_cluster() started the daemons itself

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "SLURM_CONF": self.conf}
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=check)

    def answers(self) -> bool:
        try:  # scontrol ping fails at once when no slurmctld listens; sinfo would retry for ~9 s
            if self.run("scontrol", "ping", timeout=10, check=False).returncode != 0:
                return False
            out = self.run("sinfo", "-h", "-o", "%T", timeout=10, check=False).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            return False
        return bool(out) and out[0].rstrip("*~#") in {"idle", "mixed", "allocated", "completing"}

    def node(self) -> tuple[int, int]:
        """(CPUs, memory in MB) of the node."""
        cpus, mem = self.run("sinfo", "-h", "-o", "%c %m").stdout.split()[:2]
        return int(cpus.rstrip("+")), int(mem.rstrip("+"))

    def stop(self) -> None:
        if self.state_dir is not None:
            subprocess.run([str(SCRIPT), "down", str(self.state_dir)], capture_output=True, timeout=60)
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None


def start_cluster() -> SlurmCluster:
    """The cluster SLURM_CONF (or else localhost.sh's default STATE_DIR) points to if it answers; else one
    started by localhost.sh in a fresh temp dir (root on Debian with slurm installed); else SlurmUnavailable.
    Call .stop() when done: it stops only a cluster that this function started."""
    for conf in (os.environ.get("SLURM_CONF"), DEFAULT_CONF):
        if conf and Path(conf).exists() and (cluster := SlurmCluster(conf)).answers():
            return cluster
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        raise SlurmUnavailable(f"no live SLURM (SLURM_CONF) and not root on Debian; run: {HOW}")
    if not (shutil.which("slurmctld") or Path("/usr/sbin/slurmctld").exists()):
        raise SlurmUnavailable(f"slurm is not installed; run: {HOW}")
    state = Path(tempfile.mkdtemp(prefix="charrnn-slurm-"))
    state.chmod(0o755)  # so that mariadb (user mysql) can keep its datadir inside it
    cluster = SlurmCluster(str(state / "etc" / "slurm.conf"), state)
    try:
        up = subprocess.run([str(SCRIPT), "up", str(state)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        cluster.stop()
        raise SlurmUnavailable(
            f"{SCRIPT} up {state} did not finish in 120 s; its logs are in {state}/log"
        ) from None
    if up.returncode != 0 or not cluster.answers():
        cluster.stop()
        if "port 68" in up.stderr and "in use" in up.stderr:  # e.g. another pytest worker's cluster
            raise SlurmUnavailable(
                f"another SLURM already runs here, not reachable through SLURM_CONF; {up.stderr.strip()}"
            )
        why = " ".join((up.stderr.strip() or up.stdout.strip() or f"exit {up.returncode}").splitlines()[-3:])
        raise SlurmUnavailable(f"{SCRIPT} up could not bring a cluster up: {why}")
    return cluster


@contextlib.contextmanager
def run_wide_lock() -> Iterator[Path]:
    """A dir shared by every pytest worker of this run (xdist gives them one PYTEST_XDIST_TESTRUNUID),
    held under an exclusive lock: the workers start one cluster between them and the last one out stops it."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"single-{os.getpid()}")
    shared = Path(tempfile.gettempdir()) / f"charrnn-slurm-tests-{run}"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield shared


def join_cluster(shared: Path) -> SlurmCluster:
    """The run's cluster: the one another worker started (its state dir is recorded in ``shared``), or one
    this worker starts (start_cluster) and records."""
    record = shared / "state_dir"
    if record.is_file():
        state = Path(record.read_text())
        cluster = SlurmCluster(str(state / "etc" / "slurm.conf"), state)
        if cluster.answers():
            return cluster
    cluster = start_cluster()
    if cluster.state_dir is not None:
        record.write_text(str(cluster.state_dir))
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster():
    """One cluster for the whole run, shared by its pytest workers (SLURM tests run on any of them; the
    single node queues their jobs): started by the first worker that needs it, stopped by the last one
    to finish, and only if this run started it. conftest.py registers this fixture (one definition)."""
    me = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with run_wide_lock() as shared:
        try:
            cluster = join_cluster(shared)
        except SlurmUnavailable as e:
            pytest.skip(str(e))
        (shared / f"user-{me}").touch()
    old_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.conf  # submitit and the CLI subprocesses call sbatch/sacct with it
    try:
        yield cluster
    finally:
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
        with run_wide_lock() as shared:
            (shared / f"user-{me}").unlink(missing_ok=True)
            last = not list(shared.glob("user-*"))
            if last:
                cluster.stop()
        if last:
            shutil.rmtree(shared, ignore_errors=True)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def squeue(cluster: SlurmCluster, job_id: str) -> tuple[str, str]:
    """(state, reason) of a job still in squeue, or ("", "") once it has left."""
    out = cluster.run("squeue", "-h", "-j", job_id, "-o", "%T|%r", check=False).stdout.splitlines()
    return tuple(out[0].split("|")) if out else ("", "")


def sacct(
    cluster: SlurmCluster, job_id: str, fields: str = "JobID,State,Submit,Start,End"
) -> list[dict[str, str]]:
    """One dict per job (array task) of ``job_id``, without its steps."""
    out = cluster.run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", fields).stdout.splitlines()
    return [dict(zip(fields.split(","), line.split("|"))) for line in out]
