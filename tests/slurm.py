"""A real one-node SLURM with accounting for the tests (scripts/slurm/localhost.sh), shared by the test
modules that import :func:`slurm_cluster`: the cluster SLURM_CONF points to if it answers, else one started
here (as root on Debian, with slurm installed) and stopped when the last module using it is done; else a skip
saying how to get one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
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


_SHARED: dict = {"cluster": None, "users": 0, "old_conf": None}


@pytest.fixture(scope="session")
def slurm_cluster():
    """One cluster for the session; each test module that imports this fixture holds it until its end."""
    if _SHARED["cluster"] is None:
        try:
            cluster = start_cluster()
        except SlurmUnavailable as e:
            pytest.skip(str(e))
        _SHARED.update(cluster=cluster, old_conf=os.environ.get("SLURM_CONF"))
        os.environ["SLURM_CONF"] = cluster.conf  # submitit and the CLI subprocesses call sbatch/sacct with it
    _SHARED["users"] += 1
    try:
        yield _SHARED["cluster"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            if _SHARED["old_conf"] is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = _SHARED["old_conf"]
            _SHARED["cluster"].stop()
            _SHARED["cluster"] = None


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
