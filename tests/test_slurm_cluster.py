"""A real one-node SLURM with accounting (scripts/slurm/localhost.sh): sbatch, arrays, submitit, scancel.

Run them with:  sudo scripts/slurm/localhost.sh install && pytest -m slurm tests/test_slurm_cluster.py
(as root on Debian the fixture starts the cluster itself; elsewhere point SLURM_CONF at a live one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm" / "localhost.sh"
DEFAULT_CONF = "/tmp/charrnn-slurm/etc/slurm.conf"  # where `localhost.sh up` without a STATE_DIR puts it
HOW = f"sudo scripts/slurm/localhost.sh install && scripts/slurm/localhost.sh up, then export SLURM_CONF={DEFAULT_CONF}"
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
    except subprocess.TimeoutExpired as e:
        cluster.stop()
        raise RuntimeError(f"{SCRIPT} up timed out:\n{e.stdout}{e.stderr}") from e
    if up.returncode != 0 or not cluster.answers():
        cluster.stop()
        raise RuntimeError(f"{SCRIPT} up failed:\n{up.stdout}{up.stderr}")
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster():
    try:
        cluster = start_cluster()
    except SlurmUnavailable as e:
        pytest.skip(str(e))
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.conf  # submitit calls sbatch/sacct with our environment
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()


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


def test_throttled_array_completes_and_sacct_reports_it(slurm_cluster, tmp_path):
    job = slurm_cluster.run("sbatch", "--parsable", f"--partition={PARTITION}", "--array=0-1%1",
                            f"--chdir={tmp_path}", "--output=task_%a.out",
                            "--wrap", "echo task $SLURM_ARRAY_TASK_ID; sleep 1").stdout.strip()

    def rows():
        out = slurm_cluster.run("sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State,Start,End").stdout
        rows = [line.split("|") for line in out.splitlines()]
        return rows if len(rows) == 2 and all(r[1] in TERMINAL for r in rows) else None

    (t0, s0, _, end0), (t1, s1, start1, _) = sorted(wait_until(rows, 30, f"array {job} in sacct"))
    assert (t0, t1, s0, s1) == (f"{job}_0", f"{job}_1", "COMPLETED", "COMPLETED")
    assert start1 >= end0, "%1 throttling: task 1 started before task 0 ended"
    assert [(tmp_path / f"task_{i}.out").read_text() for i in (0, 1)] == ["task 0\n", "task 1\n"]


def _executor(folder: Path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(slurm_partition=PARTITION, timeout_min=5, cpus_per_task=1)
    return executor


def _result_within(job, timeout: float):
    """job.result() in a daemon thread, so that a hang fails the test instead of stalling the run."""
    box: dict = {}

    def target():
        try:
            box["result"] = job.result()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"job.result() of {job.job_id} still blocked after {timeout} s")
    return box


def test_submitit_runs_a_function_on_the_cluster(slurm_cluster, tmp_path):
    job = _executor(tmp_path).submit(os.getenv, "SLURM_JOB_ID")
    assert _result_within(job, 45) == {"result": job.job_id}  # it ran inside that very SLURM job


def test_scancel_makes_submitit_result_raise_promptly(slurm_cluster, tmp_path):
    import submitit

    job = _executor(tmp_path).submit(time.sleep, 300)
    wait_until(lambda: squeue(slurm_cluster, job.job_id)[0] == "RUNNING", 30, f"{job.job_id} RUNNING")
    job._results_timeout_s = 0  # submitit's grace for a slow shared filesystem (15 s); none needed here
    slurm_cluster.run("scancel", job.job_id)
    start = time.monotonic()
    box = _result_within(job, 30)  # only sacct (accounting) tells submitit the job is gone
    assert isinstance(box.get("error"), submitit.core.utils.UncompletedJobError), box
    assert "CANCELLED" in job.state
    assert time.monotonic() - start < 20


def test_oversize_requests(slurm_cluster, tmp_path):
    cpus, mem = (int(v.rstrip("+")) for v in slurm_cluster.run("sinfo", "-h", "-o", "%c %m").stdout.split()[:2])
    too_much_mem = slurm_cluster.run("sbatch", f"--partition={PARTITION}", f"--mem={mem * 10}",
                                     f"--chdir={tmp_path}", "--wrap", "true", timeout=10, check=False)
    assert too_much_mem.returncode != 0  # refused at once
    assert "Memory specification can not be satisfied" in too_much_mem.stderr

    # More CPUs than the node has: accepted, then PENDING for ever with Reason PartitionConfig.
    job = slurm_cluster.run("sbatch", "--parsable", f"--partition={PARTITION}", f"--cpus-per-task={cpus + 1}",
                            f"--chdir={tmp_path}", "--wrap", "true").stdout.strip()
    try:
        state, reason = wait_until(lambda: (s := squeue(slurm_cluster, job))[1] not in ("", "None") and s,
                                   15, f"a pending reason for {job}")
        assert (state, reason) == ("PENDING", "PartitionConfig")
    finally:
        slurm_cluster.run("scancel", job, check=False)
