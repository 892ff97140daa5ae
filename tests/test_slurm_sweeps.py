"""Sweeps through charrnn's SLURM launcher (``hydra/launcher=slurm``, charrnn.cli.slurm) on a real SLURM.

The tests marked ``slurm`` run real ``charrnn-train -m`` processes against the one-node cluster of
tests/slurm.py (skipped, saying how to get one, where none can start); the others check the launcher's
rules without a cluster. The sweeps that are signalled or interrupted are real processes; the others, and
charrnn-report, are called in this process (the jobs are SLURM's processes either way).
"""

from __future__ import annotations

import csv
import datetime as dt
import signal
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from charrnn.cli import slurm as launcher
from charrnn.cli.commands import resume_command
from charrnn.core.errors import UserError
from conftest import TINY_RUN, cli_in_process, popen_cli, write_corpus
from slurm import TERMINAL, sacct, squeue, wait_until

SWEEP = [
    "-m",
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.array_parallelism=2",
    "trainer=cpu",
]
TINY = [o for o in TINY_RUN if not o.startswith("model.hidden_size=")] + ["model.hidden_size=16"]


def sweep_args(root: Path, *extra: str) -> list[str]:
    corpus = write_corpus(root)
    return [*SWEEP, "data=text", f"data.path={corpus}", *TINY, *extra]


def the_sweep(root: Path) -> Path:
    (sweep,) = [p for p in (root / "outputs" / "multirun").glob("*/*") if p.is_dir()]
    return sweep


def job_dir(sweep: Path, num: int) -> Path:
    (path,) = sweep.glob(f"{num}_*")
    return path


def report_rows(sweep: Path, cwd: Path) -> dict[str, dict[str, str]]:
    proc = cli_in_process([str(sweep)], cwd=cwd, script="charrnn-report")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(sweep / "report.csv", newline="") as f:
        return {row["job"]: row for row in csv.DictReader(f)}


def seconds(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def charrnn_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("charrnn-train:")]


# --- on the cluster ---------------------------------------------------------------------------


@pytest.mark.slurm
def test_four_job_sweep_two_at_a_time(slurm_cluster, tmp_path, capsys):
    started = time.time()
    proc = cli_in_process(sweep_args(tmp_path, "optim.lr=1e-3,3e-3", "seed=1,2"), cwd=tmp_path, timeout=240)
    ended = time.time()
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = the_sweep(tmp_path)
    for num in range(4):
        job = job_dir(sweep, num)
        assert (job / "metrics.json").is_file() and list((job / "tensorboard").rglob("events.out.tfevents.*"))
        assert (job / "checkpoints" / "last.ckpt").is_file() and list(
            (job / "checkpoints").glob("best-*.ckpt")
        )
        run = yaml.safe_load((job / "run.json").read_text())
        assert run["status"] == "done" and run["device"]["cpu_threads"] == 1  # torch threads = cpus_per_task
    assert [r["status"] for r in report_rows(sweep, tmp_path).values()] == ["done"] * 4

    array = sorted((sweep / ".submitit").glob("*_0"))[0].name.split("_")[0]
    # Accounting (slurmdbd) may record a job's end a moment after the sweep has its result: wait for it.
    rows = wait_until(
        lambda: (
            (rows := sacct(slurm_cluster, array))
            and all(r["State"].split()[0] in TERMINAL for r in rows)
            and rows
        ),
        30,
        "sacct to record every job's end",
    )
    assert sorted(r["JobID"] for r in rows) == [f"{array}_{i}" for i in range(4)] and {
        r["State"] for r in rows
    } == {"COMPLETED"}
    spans = [(seconds(r["Start"]), seconds(r["End"])) for r in rows]
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert 1 <= most <= 2, f"array_parallelism=2, yet {most} jobs ran at once: {rows}"
    first_running = min(s for s, _ in spans) - min(seconds(r["Submit"]) for r in rows)
    tail = ended - max(e for _, e in spans)
    with capsys.disabled():
        print(
            f"\n[slurm] 4-job sweep: {ended - started:.1f} s wall; "
            f"submit -> first RUNNING {first_running:.0f} s "
            f"(sacct, 1 s steps); at most {most} at once; last job end -> sweep exit {tail:.1f} s"
        )
    assert first_running <= 30 and tail < 15  # scheduled at once; no waiting on submitit's slow polls


@pytest.mark.slurm
def test_scancel_of_one_job_ends_the_sweep_and_the_report_shows_it(slurm_cluster, tmp_path, capsys):
    proc = popen_cli(
        sweep_args(tmp_path, "trainer.max_steps=20,100000,20"), tmp_path
    )  # job 1 would train for minutes
    try:
        run_json = wait_until(
            lambda: next((tmp_path / "outputs" / "multirun").glob("*/*/1_*/run.json"), None),
            120,
            "job 1 training",
        )
        job_id = yaml.safe_load((run_json.parent / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
        slurm_cluster.run("scancel", job_id)
        cancelled = time.monotonic()
        _, stderr = proc.communicate(timeout=90)
        took = time.monotonic() - cancelled
    finally:
        proc.kill()
    with capsys.disabled():
        print(f"\n[slurm] scancel {job_id} -> sweep exit {took:.1f} s")
    assert took < 60 and proc.returncode == 1, stderr[-3000:]
    (line,) = charrnn_lines(stderr)
    assert f"sweep job 1 (SLURM job {job_id}) was cancelled: CANCELLED by" in line and "log: " in line, line
    assert "Traceback" not in stderr

    sweep = the_sweep(tmp_path)
    rows = report_rows(sweep, tmp_path)
    assert {n: r["status"] for n, r in rows.items()} == {"0": "done", "1": "cancelled", "2": "done"}
    assert rows["1"]["error"].startswith("CANCELLED by") and Path(rows["1"]["log"]).is_file()
    assert (job_dir(sweep, 0) / "metrics.json").is_file() and (job_dir(sweep, 2) / "metrics.json").is_file()
    wait_until(  # a cancelled job stays in squeue while it completes (MinJobAge)
        lambda: squeue(slurm_cluster, job_id.split("_")[0]) == ("", ""), 30, f"job {job_id} to leave squeue"
    )


@pytest.mark.slurm
def test_sigterm_to_the_sweep_cancels_its_array(slurm_cluster, tmp_path):
    proc = popen_cli(sweep_args(tmp_path, "trainer.max_steps=100000", "seed=1,2,3"), tmp_path)
    try:
        submitted = wait_until(
            lambda: next((tmp_path / "outputs" / "multirun").glob("*/*/.submitit/*_0"), None),
            120,
            "the array",
        )
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    array = submitted.name.split("_")[0]
    assert proc.returncode == 143, stderr[-3000:]
    (line,) = charrnn_lines(stderr)
    assert line.startswith(f"charrnn-train: SIGTERM: cancelled SLURM job {array} (3 sweep jobs)"), line
    wait_until(lambda: squeue(slurm_cluster, array) == ("", ""), 30, f"array {array} to leave squeue")
    assert {r["State"].split()[0] for r in sacct(slurm_cluster, array)} == {"CANCELLED"}


@pytest.mark.slurm
@pytest.mark.parametrize("resource", ["cpus", "memory", "gpus"])
def test_a_request_no_node_can_hold_is_one_sentence(slurm_cluster, tmp_path, resource):
    cpus, mem_mb = slurm_cluster.node()
    ask, words = {
        "cpus": (f"hydra.launcher.cpus_per_task={cpus + 1}", [f"{cpus + 1} CPUs", f"has {cpus}"]),
        "memory": (
            f"hydra.launcher.mem_gb={mem_mb // 1024 * 10}",
            ["GB of memory", f"{mem_mb / 1024:.1f} GB"],
        ),
        "gpus": ("trainer=gpu", ["trainer.accelerator=gpu", "1 GPU(s)", "has none"]),
    }[resource]
    # The timeout is the guard against a hang: the refusal comes before anything is submitted.
    proc = cli_in_process([*sweep_args(tmp_path), ask, "seed=1,2"], cwd=tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert (
        line.startswith("charrnn-train: error: ")
        and "partition 'debug'" in line
        and all(w in line for w in words)
    ), line
    # Nothing was submitted: no job from this dir in squeue (a CPU request too big would pend there for ever).
    assert str(tmp_path) not in slurm_cluster.run("squeue", "-h", "-o", "%Z").stdout.split()
    assert not list((tmp_path / "outputs").rglob(".submitit"))


# --- the rules, without a cluster --------------------------------------------------------------

NODES = [launcher.Node("a", 8, 64_000, 0), launcher.Node("b", 32, 256_000, 4)]


def test_gres_and_trainer_gpus():
    assert [
        launcher.gres_gpus(g) for g in ("(null)", "gpu:4", "gpu:a100:2(S:0-1),gpu:v100:2", "mps:100", None)
    ] == [0, 4, 4, 0, 0]
    t = OmegaConf.create
    assert launcher.trainer_gpus(t({"accelerator": "cpu", "devices": 2}), 1, True) == 0
    assert launcher.trainer_gpus(t({"accelerator": "gpu", "devices": 1}), 1, True) == 1
    assert (
        launcher.trainer_gpus(t({"accelerator": "gpu", "devices": -1, "strategy": "ddp"}), 4, True) == 4
    )  # trainer=ddp
    assert launcher.trainer_gpus(t({"accelerator": "gpu", "devices": [0, 1]}), 1, True) == 2
    assert [
        launcher.trainer_gpus(t({"accelerator": "auto", "devices": 1}), 1, has) for has in (True, False)
    ] == [1, 0]


@pytest.mark.parametrize(
    "params, words",
    [
        (
            {"cpus_per_task": 20, "tasks_per_node": 2},
            ["cpus_per_task=20 x tasks_per_node=2", "40 CPUs", "largest node", "has 32"],
        ),
        ({"mem_gb": 500}, ["mem_gb=500", "500 GB of memory", "250.0 GB"]),
        ({"gpus_per_node": 8}, ["gpus_per_node=8", "8 GPU(s)", "at most 4 per node"]),
        ({"cpus_per_task": 16, "mem_gb": 100, "nodes": 2}, ["2 node(s)", "16 CPUs", "1 such node(s) of 2"]),
    ],
)
def test_check_request_names_the_resource(params, words):
    with pytest.raises(UserError) as e:
        launcher.check_request(params, "gpu", NODES)
    assert "partition 'gpu'" in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
    launcher.check_request(
        {"cpus_per_task": 32, "mem_gb": 200, "gpus_per_node": 4}, "gpu", NODES
    )  # fits node b
    with pytest.raises(UserError, match="the trainer .* asks for 1 GPU.* has none; choose a GPU partition"):
        launcher.check_request(
            {"gpus_per_node": 1}, "cpu", NODES[:1], "the trainer (trainer.accelerator=gpu)"
        )


def test_launch_failure_line(tmp_path):
    from submitit.core.utils import FailedJobError, UncompletedJobError

    result = tmp_path / "7_1" / "7_1_0_result.pkl"
    cancelled = UncompletedJobError(
        f"Job 7_1 (task: 0) with path {result}\nhas not produced any output (state: CANCELLED by 0)\n"
        "Error stream produced:\n----\nlots"
    )
    assert (
        launcher.launch_failure_line(cancelled)
        == f"job 7_1 was cancelled: CANCELLED by 0; log: {tmp_path}/7_1/7_1_0_log.err"
    )
    timeout = UncompletedJobError(
        f"Job 7_2 (task: 0) with path {result}\nhas not produced any output (state: TIMEOUT)"
    )
    assert launcher.launch_failure_line(timeout).startswith(
        "job 7_2 failed: TIMEOUT: it ran past hydra.launcher.timeout_min; log: "
    )
    err = tmp_path / "7_3" / "7_3_0_log.err"
    raised = FailedJobError(
        "Job (task=0) failed during processing with trace:\n----------------------\nTraceback...\n"
        "ValueError: bad\n----------------------\nYou can check full logs with 'job.stderr(0)'or at paths:\n"
        f"  - {err}\n  - {err.with_suffix('.out')}"
    )
    assert launcher.launch_failure_line(raised) == f"job 7_3 failed: ValueError: bad; log: {err}"
    refused = FailedJobError(
        "sbatch: error: Memory specification can not be satisfied\nsbatch: error: Batch job submission failed"
    )
    assert launcher.launch_failure_line(refused).startswith(
        "SLURM refused the sweep: sbatch: error: Memory specification"
    )
    assert launcher.launch_failure_line(ValueError("x")) is None


def test_partition_nodes_reads_sinfo(tmp_path, monkeypatch):
    sinfo = tmp_path / "sinfo"
    sinfo.write_text(
        "#!/bin/sh\nprintf 'a|cpu*|8|64000|(null)\\nb|gpu|32|256000|gpu:a100:4(S:0-1)\\n"
        "b|cpu*|32|256000|gpu:a100:4(S:0-1)\\n'\n"
    )
    sinfo.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert launcher.partition_nodes(None) == (
        "cpu",
        [launcher.Node("a", 8, 64000, 0), launcher.Node("b", 32, 256000, 4)],
    )
    assert launcher.partition_nodes("gpu") == ("gpu", [launcher.Node("b", 32, 256000, 4)])
    with pytest.raises(UserError, match="SLURM has no partition 'x' .*; it has: cpu, gpu"):
        launcher.partition_nodes("x")
    sinfo.unlink()
    with pytest.raises(UserError, match="sinfo is not on PATH"):
        launcher.partition_nodes(None)


def test_report_reads_cancelled_stopped_and_failed_jobs(tmp_path):
    from charrnn.cli import report

    sweep = tmp_path / "sweep"
    log = sweep / ".submitit" / "7_2" / "7_2_0_log.err"
    log.parent.mkdir(parents=True)
    log.write_text("Traceback ...\n")
    jobs = {  # num: (error.txt, run.json status)
        0: ("charrnn-train: cancelled: CANCELLED by 0 (SLURM job 7_0); log: /x/7_0_0_log.err", "stopped"),
        1: (None, "stopped"),
        2: ("charrnn-train: failed: ValueError: boom\n\nTraceback ...", "failed"),
    }
    for num, (error, status) in jobs.items():
        job = sweep / f"{num}_seed={num}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={num}\n")
        (job / ".hydra" / "hydra.yaml").write_text(
            f"hydra:\n  job:\n    id: '7_{num}'\n"
        )  # as OmegaConf writes it
        (job / "run.json").write_text(f'{{"status": "{status}", "stopped_by": "SIGTERM", "global_step": 40}}')
        if error:
            (job / "error.txt").write_text(error)
    got = {j.num: (j.status, j.error, j.log) for j in report.find_jobs(sweep)}
    assert got[0] == (
        "cancelled",
        "CANCELLED by 0 (SLURM job 7_0); stopped at step 40 with last.ckpt",
        "/x/7_0_0_log.err",
    )
    assert got[1][:2] == (
        "stopped",
        f"stopped by SIGTERM at step 40; continue with: {resume_command(sweep / '1_seed=1')}",
    )
    assert got[2] == (
        "failed",
        "ValueError: boom",
        str(log),
    )  # the log found through .hydra/hydra.yaml's job id
