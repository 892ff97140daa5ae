"""``charrnn-train -m resume=<sweep dir>`` of a SLURM sweep whose launching process was killed, on the real
one-node cluster of tests/slurm.py.

Four jobs, two at a time; jobs 1 and 2 are held at step 12 (tests/helpers/hold_at.py, after their step-10
checkpoint) while job 0 ends. Then the sweep process is SIGKILLed, job 3 (pending) is cancelled and job 1
is killed (SIGKILL, as a lost node would): job 2 is still in SLURM. The resume must wait for job 2 (one
line naming it) instead of running a second copy, then count jobs 0 and 2, continue job 1 from its
last.ckpt and start job 3, each ending exactly as in an uninterrupted sweep with the same seeds; the report
says so before and after. Without a cluster: the wait and its cancelling on Ctrl-C, with a fake squeue.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import WITH_HELPERS, cli_in_process, tensorboard_history
from slurm import squeue, wait_until
from test_slurm_sweeps import job_dir, sweep_args, the_sweep

HOLD = ["_target_=hold_at.HoldAt", "jobs=[1,2]", "step=12"]
EXCLUDE = (
    "data.path,resume,callbacks.hold._target_,callbacks.hold.jobs,callbacks.hold.step,callbacks.hold.dir"
)
HELPERS = {**WITH_HELPERS, "PYTHONWARNINGS": "ignore"}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """squeue printing ``<tmp>/squeue.txt``; scancel logging its arguments and emptying the queue."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    queue, log = tmp_path / "squeue.txt", tmp_path / "scancel.txt"
    (bin_dir / "squeue").write_text(f"#!/bin/sh\ncat {queue}\n")
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {log}\n: > {queue}\n')
    for tool in ("squeue", "scancel"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    sweep = tmp_path / "sweep"
    for name in ("7", "7_0", "7_1", "9_0"):  # array 7: an earlier launch's; 9: this process's own
        (sweep / ".submitit" / name).mkdir(parents=True)
    queue.write_text("7_1\n8_0\n9_0\n")  # 8: another sweep's job
    return sweep, queue, log


def test_the_earlier_launch_is_waited_for_until_it_leaves_squeue(fake_slurm, capsys):
    from charrnn.cli.slurm_alive import wait_for_earlier_launch

    sweep, queue, log = fake_slurm
    threading.Timer(0.5, queue.write_text, ("8_0\n",)).start()
    wait_for_earlier_launch(f"{sweep}/.submitit/%j", {"9"}, sweep, poll_s=0.1)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["charrnn-train: waiting for 1 SLURM job(s) of the earlier launch, still in SLURM: 7_1"]
    assert not log.exists()
    wait_for_earlier_launch(f"{sweep}/.submitit/%j", {"9"}, sweep, poll_s=0.1)  # none left: silent
    assert capsys.readouterr().err == ""


def test_ctrl_c_while_waiting_cancels_the_earlier_launch(fake_slurm, capsys):
    from charrnn.cli.slurm_alive import wait_for_earlier_launch

    sweep, queue, log = fake_slurm
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(SystemExit) as stop:
        wait_for_earlier_launch(f"{sweep}/.submitit/%j", {"9"}, sweep, poll_s=0.1)
    assert stop.value.code == 130 and log.read_text() == "7_1\n"
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("charrnn-train: SIGINT: cancelled SLURM job(s) 7_1 of the earlier launch"), last
    assert f"charrnn-train -m resume={sweep} continues them" in last


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """charrnn-train in its own process group, stderr to ``log``; SLURM jobs inherit its env (PYTHONPATH)."""
    env = {**os.environ, **HELPERS}
    env.pop("HYDRA_FULL_ERROR", None)
    exe = str(Path(sys.executable).parent / "charrnn-train")
    with log.open("w") as err:
        return subprocess.Popen(
            [exe, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )


def outcome(job: Path) -> tuple:
    metrics = json.loads((job / "metrics.json").read_text())
    figures = {k: metrics[k] for k in ("best_val_bpc", "final", "test", "global_step", "epochs")}
    return figures, tensorboard_history(job)


def report(sweep: Path, cwd: Path) -> tuple[str, dict[str, dict[str, str]]]:
    proc = cli_in_process([str(sweep)], cwd=cwd, script="charrnn-report")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(sweep / "report.csv", newline="") as f:
        return " ".join(proc.stdout.split()), {row["job"]: row for row in csv.DictReader(f)}


@pytest.mark.slurm
def test_a_killed_slurm_sweep_resumes_without_a_second_copy_of_a_live_job(slurm_cluster, tmp_path, capsys):
    began = time.monotonic()
    holds = tmp_path / "holds"
    holds.mkdir()
    hold = [f"+callbacks.hold.{kv}" for kv in HOLD] + [f"+callbacks.hold.dir={holds}"]
    args = sweep_args(tmp_path, "seed=1,2,3,4", *hold)
    sweep_proc = start(
        [*args, f"hydra.job.config.override_dirname.exclude_keys=[{EXCLUDE}]"],
        tmp_path,
        tmp_path / "launch1.err",
    )
    try:
        wait_until(lambda: (holds / "held_1").exists() and (holds / "held_2").exists(), 180, "jobs 1, 2 held")
        os.killpg(sweep_proc.pid, signal.SIGKILL)  # the launching process dies; its array lives on
        sweep_proc.wait(timeout=30)
    finally:
        sweep_proc.kill()
    sweep = the_sweep(tmp_path)
    array = min(p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit())
    slurm_cluster.run("scancel", f"{array}_3")  # pending: it never starts in this launch
    slurm_cluster.run(
        "scancel", "--signal=KILL", f"{array}_1"
    )  # killed mid-run, after its step-10 checkpoint
    for task in (1, 3):
        wait_until(lambda t=task: squeue(slurm_cluster, f"{array}_{t}") == ("", ""), 60, f"job {task} gone")
    assert (job_dir(sweep, 0) / "metrics.json").is_file() and not list(sweep.glob("3_*"))
    assert json.loads((job_dir(sweep, 1) / "run.json").read_text())["status"] == "running"

    text, rows = report(sweep, tmp_path)
    assert {n: r["began"] for n, r in rows.items()} == {"0": "started", "1": "started", "2": "started"}
    assert "launch 1: 3 jobs: 3 started" in text, text

    # The uninterrupted sweep, run now: jobs 1 and 2 sleep at their hold, the CPUs are free.
    reference = cli_in_process(  # one torch thread, as each SLURM job (cpus_per_task=1)
        ["-m", *[a for a in args if not a.startswith(("hydra", "+callbacks", "-m"))], "hydra.sweep.dir=ref"],
        cwd=tmp_path,
        env=HELPERS,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    resume_log = tmp_path / "launch2.err"
    resume = start(["-m", f"resume={sweep}"], tmp_path, resume_log)
    try:
        line = wait_until(
            lambda: next((s for s in resume_log.read_text().splitlines() if "waiting for" in s), None),
            60,
            "the waiting line",
        )
        assert (
            line
            == f"charrnn-train: waiting for 1 SLURM job(s) of the earlier launch, still in SLURM: {array}_2"
        )
        time.sleep(3)  # still waiting: nothing of this launch is submitted while job 2 runs
        assert sorted(p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()) == [array]
        (holds / "go_2").touch()
        assert resume.wait(timeout=300) == 0, resume_log.read_text()[-3000:]
    finally:
        resume.kill()

    for num in range(4):
        assert outcome(job_dir(sweep, num)) == outcome(job_dir(tmp_path / "ref", num)), num
        assert not list((job_dir(sweep, num) / "checkpoints").glob("*-v1.ckpt"))
    job2 = json.loads((job_dir(sweep, 2) / "run.json").read_text())
    assert "earlier_attempts" not in job2 and job2["counted_in_launches"] == [2]  # trained once, in launch 1
    job1 = json.loads((job_dir(sweep, 1) / "run.json").read_text())
    assert (job1["began"], job1["launch"], job1["earlier_attempts"][0]["status"]) == ("resumed", 2, "running")

    text, rows = report(sweep, tmp_path)
    assert {n: (r["status"], r["began"]) for n, r in rows.items()} == {
        "0": ("done", "done"),
        "1": ("done", "resumed"),
        "2": ("done", "done"),
        "3": ("done", "started"),
    }
    assert "launch 2: 4 jobs: 2 done before, 1 resumed, 1 started" in text, text
    with capsys.disabled():
        print(f"\n[slurm] killed sweep + resume: {time.monotonic() - began:.0f} s")
