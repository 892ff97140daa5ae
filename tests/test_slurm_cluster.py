"""A real one-node SLURM with accounting (scripts/slurm/localhost.sh): sbatch, arrays, submitit, scancel.

Run them with:  sudo scripts/slurm/localhost.sh install && pytest -m slurm tests/test_slurm_cluster.py
(as root on Debian the fixture in tests/slurm.py starts the cluster itself; elsewhere point SLURM_CONF at
a live one). The sweeps through charrnn's launcher are in test_slurm_sweeps.py.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from slurm import PARTITION, TERMINAL, squeue, wait_until

pytestmark = pytest.mark.slurm


def test_throttled_array_completes_and_sacct_reports_it(slurm_cluster, tmp_path):
    job = slurm_cluster.run(
        "sbatch",
        "--parsable",
        f"--partition={PARTITION}",
        "--array=0-1%1",
        f"--chdir={tmp_path}",
        "--output=task_%a.out",
        "--wrap",
        "echo task $SLURM_ARRAY_TASK_ID; sleep 1",
    ).stdout.strip()

    def rows():  # for a moment a finished task can show in sacct as plain "{job}" (1 run in 60): wait
        out = slurm_cluster.run("sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State,Start,End").stdout
        rows = sorted(line.split("|") for line in out.splitlines())
        done = [r[0] for r in rows if r[1] in TERMINAL] == [f"{job}_0", f"{job}_1"]
        return rows if done and len(rows) == 2 else None

    (_, s0, _, end0), (_, s1, start1, _) = wait_until(rows, 30, f"array {job} in sacct")
    assert (s0, s1) == ("COMPLETED", "COMPLETED")
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
    slurm_cluster.run("scancel", job.job_id)
    # Only sacct (accounting) tells submitit the job is gone; it then waits its 15 s of grace for a
    # result file a slow shared filesystem might show late. Without accounting it would wait for ever.
    box = _result_within(job, 90)
    assert isinstance(box.get("error"), submitit.core.utils.UncompletedJobError), box
    assert "CANCELLED" in job.state


def test_oversize_requests(slurm_cluster, tmp_path):
    cpus, mem = slurm_cluster.node()
    too_much_mem = slurm_cluster.run(
        "sbatch",
        f"--partition={PARTITION}",
        f"--mem={mem * 10}",
        f"--chdir={tmp_path}",
        "--wrap",
        "true",
        timeout=10,
        check=False,
    )
    assert too_much_mem.returncode != 0  # refused at once
    assert "Memory specification can not be satisfied" in too_much_mem.stderr

    # More CPUs than the node has: accepted, then PENDING for ever with Reason PartitionConfig.
    job = slurm_cluster.run(
        "sbatch",
        "--parsable",
        f"--partition={PARTITION}",
        f"--cpus-per-task={cpus + 1}",
        f"--chdir={tmp_path}",
        "--wrap",
        "true",
    ).stdout.strip()
    try:
        state, reason = wait_until(
            lambda: (s := squeue(slurm_cluster, job))[1] not in ("", "None") and s,
            15,
            f"a pending reason for {job}",
        )
        assert (state, reason) == ("PENDING", "PartitionConfig")
    finally:
        slurm_cluster.run("scancel", job, check=False)
