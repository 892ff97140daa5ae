"""DDP jobs whose ranks SLURM starts: ``hydra/launcher=slurm hydra.launcher.tasks_per_node=2 trainer=ddp_cpu``

Every SLURM task of the job runs the job; Lightning's SLURMEnvironment takes each task's rank from SLURM and
starts no process itself. On the real one-node cluster of tests/slurm.py, a 2-task job must end with the
metrics and TensorBoard history of the same run under ``trainer=ddp_cpu`` on this machine (no SLURM), in one
job dir where rank 0 keeps the records, and continue exactly after a requeue, as a one-task job does
(tests/test_slurm_requeue.py). ``trainer=ddp`` on a GPU cluster is the same path with NCCL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from charrnn.cli.checks import check_sweep_job
from charrnn.cli.jobs import Job, SweepRefused
from conftest import TINY_TEXT, compose_config, made_once, only_run_dir, run_cli, tensorboard_history
from forked import run_forked
from slurm import wait_until
from test_slurm_requeue import final_metrics
from test_slurm_sweeps import job_dir, popen_cli, report_rows, the_sweep

# Long enough that the job is still training when it is interrupted after its first checkpoint (step 10).
RUN = [
    "trainer=ddp_cpu",
    "data=text",
    "model.hidden_size=16",
    "data.seq_len=16",
    "data.batch_size=4",
    "trainer.max_steps=60",
    "trainer.val_check_interval=10",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
    "sample.length=20",
    "seed=1",
]
SLURM = ["-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.tasks_per_node=2"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # as each SLURM task has (cpus_per_task=1): the same arithmetic


def corpus_args(root: Path) -> list[str]:
    corpus = root / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    return [*RUN, f"data.path={corpus}"]


@pytest.fixture(scope="module")
def local_ddp(tmp_path_factory) -> Path:
    """The same run under trainer=ddp_cpu on this machine: Lightning starts rank 1 itself (rank 0 is forked
    from this worker, tests/forked.py; rank 1 is the console script). Once per test run (made_once)."""

    def make(root: Path) -> None:
        proc = run_forked(corpus_args(root), cwd=root, env=ONE_THREAD)
        assert proc.returncode == 0, proc.stderr[-3000:]

    return only_run_dir(made_once(tmp_path_factory, "local_ddp", make))


def assert_one_job_dir_kept_by_rank_0(sweep: Path, local: Path) -> Path:
    """The sweep's only job dir, with the local run's metrics, TensorBoard history and files."""
    (job,) = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert final_metrics(job) == final_metrics(local)
    assert tensorboard_history(job) == tensorboard_history(local)
    assert {p.parent for p in job.rglob("events.out.tfevents.*")} == {job / "tensorboard"}
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == sorted(
        p.name for p in (local / "checkpoints").iterdir()
    )
    assert (job / "train.log").is_file() and (job / "train_ddp_process_1.log").is_file()
    (logs,) = (sweep / ".submitit").glob("[0-9]*")
    for rank in (0, 1):  # SLURM started both ranks, each a task of the job
        assert (
            f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in (logs / f"{logs.name}_{rank}_log.err").read_text()
        )
    return job


@pytest.mark.slurm
def test_a_two_task_ddp_job_equals_the_local_ddp_run(slurm_cluster, local_ddp, tmp_path, capsys):
    started = time.monotonic()
    proc = run_cli([*SLURM, *corpus_args(tmp_path)], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = the_sweep(tmp_path)
    job = assert_one_job_dir_kept_by_rank_0(sweep, local_ddp)
    assert sorted(p.name for p in (job / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    record = json.loads((job / "run.json").read_text())
    assert (
        record["status"] == "done"
        and record["slurm"]["restart_count"] == 0
        and "earlier_attempts" not in record
    )
    assert [r["status"] for r in report_rows(sweep, tmp_path).values()] == ["done"]
    with capsys.disabled():
        print(
            f"\n[slurm] 2-task DDP job: {time.monotonic() - started:.0f} s wall; metrics equal the local run"
        )


@pytest.mark.slurm
@pytest.mark.parametrize(
    "command, signal_name",
    [(["scontrol", "requeue"], "SIGTERM"), (["scancel", "--signal=USR2"], "SIGUSR2")],
    ids=["requeue", "time-limit"],
)
def test_a_requeued_two_task_ddp_job_continues_exactly(
    slurm_cluster, local_ddp, tmp_path, command, signal_name
):
    proc = popen_cli([*SLURM, *corpus_args(tmp_path), "hydra.launcher.timeout_min=5"], tmp_path)
    try:
        last = wait_until(
            lambda: next((tmp_path / "outputs" / "multirun").glob("*/*/0_*/checkpoints/last.ckpt"), None),
            240,
            "the job's first checkpoint",
        )
        job_id = yaml.safe_load((last.parents[1] / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
        slurm_cluster.run(*command, job_id)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    sweep = the_sweep(tmp_path)
    job = assert_one_job_dir_kept_by_rank_0(sweep, local_ddp)
    assert not any("-v" in p.name for p in (job / "checkpoints").iterdir())
    record = json.loads((job / "run.json").read_text())
    (earlier,) = record["earlier_attempts"]
    assert earlier["status"] == "stopped" and earlier["stopped_by"] == signal_name, earlier
    assert record["status"] == "done" and record["slurm"]["restart_count"] == 1
    assert earlier["global_step"] < record["global_step"] == 60
    assert job_dir(sweep, 0) == job


def slurm_job(tasks_per_node: int) -> Job:
    launcher = "hydra_plugins.charrnn_slurm_launcher.slurm_launcher.SubmititSlurmLauncher"
    return Job(launcher=launcher, num=0, tasks_per_node=tasks_per_node)


@pytest.mark.parametrize(
    "trainer, tasks, refused",
    [("cpu", 1, False), ("ddp_cpu", 2, False), ("ddp_cpu", 1, True), ("cpu", 2, True)],
)
def test_slurm_tasks_must_be_the_trainers_ranks(trainer, tasks, refused, tmp_path):
    cfg = compose_config([f"trainer={trainer}"], tmp_path)
    if not refused:
        check_sweep_job(cfg, slurm_job(tasks))
        return
    with pytest.raises(SweepRefused, match=f"tasks_per_node={tasks} x nodes=1 .* trainer=ddp_cpu"):
        check_sweep_job(cfg, slurm_job(tasks))
