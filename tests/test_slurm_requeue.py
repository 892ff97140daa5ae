"""Preempted and timed-out SLURM jobs, on the real one-node cluster of tests/slurm.py.

Each sweep runs one job (``seed=1``), interrupted mid-run, after its first checkpoint; SLURM runs it
again. It must continue in its own dir from the checkpoint it saved and end with exactly the metrics
of the same job left alone (the same sweep under the basic launcher, in this process: one torch
thread, as the SLURM job's cpus_per_task=1): one ``last.ckpt``, no ``-v1`` checkpoints, every
TensorBoard step once, and ``run.json`` listing the attempts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from conftest import cli_in_process, made_once, popen_cli, tensorboard_history
from slurm import wait_until
from test_slurm_sweeps import charrnn_lines, job_dir, report_rows, sweep_args, the_sweep

# Long enough that the job is still training when it is interrupted after its first checkpoint.
LONG = ["trainer.max_steps=200", "trainer.val_check_interval=20", "seed=1"]


def final_metrics(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: metrics[k] for k in ("best_val_bpc", "final", "test", "global_step", "epochs")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The job of the sweeps below, left alone: the same overrides, basic launcher, in this process."""

    def make(root: Path) -> None:
        args = [a for a in sweep_args(root, *LONG) if not a.startswith(("-m", "hydra"))]
        proc = cli_in_process(["-m", *args, "hydra.sweep.dir=sweep"], cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]

    return job_dir(made_once(tmp_path_factory, "slurm_requeue_straight", make) / "sweep", 0)


def sweep_interrupting_its_job(
    cluster, root: Path, command: list[str], *extra: str
) -> tuple[int, str, str, float]:
    """The one-job sweep, with ``command`` + the job's SLURM id run once it has saved a checkpoint.
    Returns (exit code, stderr, the job's id, seconds from submission to that checkpoint)."""
    proc = popen_cli(sweep_args(root, *LONG, *extra), root)
    try:
        started = time.monotonic()
        last = wait_until(
            lambda: next((root / "outputs" / "multirun").glob("*/*/0_*/checkpoints/last.ckpt"), None),
            180,
            "the job's checkpoint",
        )
        took = time.monotonic() - started
        job_id = yaml.safe_load((last.parents[1] / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
        cluster.run(*command, job_id)
        _, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
    return proc.returncode, stderr, job_id, took


def assert_continued_exactly(sweep: Path, straight: Path, signal_name: str) -> dict:
    """The sweep's job (interrupted) ended as ``straight`` (not): same metrics, files and TensorBoard
    steps. Returns its run.json."""
    resumed = job_dir(sweep, 0)
    assert final_metrics(resumed) == final_metrics(straight)
    names = lambda run: sorted(p.name for p in (run / "checkpoints").iterdir())  # noqa: E731
    assert names(resumed) == names(straight) and not any("-v" in n for n in names(resumed))
    assert tensorboard_history(resumed) == tensorboard_history(straight)
    record = json.loads((resumed / "run.json").read_text())
    (earlier,) = record["earlier_attempts"]
    assert earlier["status"] == "stopped" and earlier["stopped_by"] == signal_name, earlier
    assert (
        record["status"] == "done"
        and record["slurm"]["restart_count"] == 1
        and earlier["slurm"]["restart_count"] == 0
    )
    return record


@pytest.mark.slurm
def test_a_requeued_job_continues_in_its_own_dir_to_identical_metrics(
    slurm_cluster, straight, tmp_path, capsys
):
    """``scontrol requeue`` (what preemption with PreemptMode=REQUEUE does): SIGTERM, then SLURM runs it
    again."""
    code, stderr, job_id, took = sweep_interrupting_its_job(slurm_cluster, tmp_path, ["scontrol", "requeue"])
    assert code == 0, stderr[-3000:]
    sweep = the_sweep(tmp_path)
    record = assert_continued_exactly(sweep, straight, "SIGTERM")
    with capsys.disabled():
        print(
            f"\n[slurm] scontrol requeue {job_id} at its first checkpoint ({took:.0f} s after submission): "
            f"attempt 1 stopped at step {record['earlier_attempts'][0]['global_step']}, "
            "attempt 2 ended identical to the uninterrupted job"
        )
    assert {r["status"] for r in report_rows(sweep, tmp_path).values()} == {"done"}


@pytest.mark.slurm
def test_a_job_warned_of_its_time_limit_is_requeued_and_finishes(slurm_cluster, straight, tmp_path):
    """SIGUSR2, which SLURM sends signal_delay_s before timeout_min: the job saves, submitit requeues it."""
    code, stderr, _, _ = sweep_interrupting_its_job(
        slurm_cluster, tmp_path, ["scancel", "--signal=USR2"], "hydra.launcher.timeout_min=5"
    )
    assert code == 0, stderr[-3000:]
    assert_continued_exactly(the_sweep(tmp_path), straight, "SIGUSR2")


@pytest.mark.slurm
def test_time_outs_beyond_max_num_timeout_end_the_job_failed(slurm_cluster, tmp_path):
    code, stderr, _, _ = sweep_interrupting_its_job(
        slurm_cluster,
        tmp_path,
        ["scancel", "--signal=USR2"],
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.max_num_timeout=0",
    )
    assert code == 1, stderr[-3000:]
    (line,) = charrnn_lines(stderr)
    assert (
        "stopped by SIGUSR2" in line
        and "not requeued: Job not requeued because: timed-out too many times" in line
    ), line
    assert "max_num_timeout" in line and "[sweep job 0: " in line, line
    sweep = the_sweep(tmp_path)
    rows = report_rows(sweep, tmp_path)
    assert [r["status"] for r in rows.values()] == ["failed"], rows
    assert (job_dir(sweep, 0) / "checkpoints" / "last.ckpt").is_file()  # saved: resume=<job dir> continues it
