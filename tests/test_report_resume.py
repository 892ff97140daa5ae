"""charrnn-report on a resumed sweep: how each job began in the sweep's latest launch (done, resumed,
started, or not yet), read from what its attempts recorded in run.json, before and after a resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import TINY_RUN, TINY_TEXT, WITH_HELPERS, cli_in_process
from forked import run_forked


def report_in_process(sweep: Path, capsys) -> tuple[str, dict[str, dict[str, str]]]:
    from charrnn.cli.report import main

    main([str(sweep)])
    out, _ = capsys.readouterr()
    with open(sweep / "report.csv", newline="") as f:
        return " ".join(out.split()), {row["job"]: row for row in csv.DictReader(f)}


def fake_job(sweep: Path, num: int, run: dict | None, done: bool = True) -> None:
    job = sweep / f"{num}_seed={num}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- seed={num}\n")
    if run is not None:
        (job / "run.json").write_text(json.dumps(run))
    if done:
        (job / "metrics.json").write_text(json.dumps({"best_val_bpc": 4.0 + num, "global_step": 20}))


def test_how_each_job_began_in_the_latest_launch_from_its_records(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("seed: 1\nresume_launch: 3\n")
    first = {"status": "done", "began": "started", "launch": 1}
    # 0: done in launch 1, counted by launches 2 and 3.
    fake_job(sweep, 0, {**first, "counted_in_launches": [2, 3]})
    # 1: killed in launch 1, resumed in 2, then requeued by SLURM within launch 3, which first resumed it.
    requeued = {"status": "done", "began": "resumed", "launch": 3}
    attempts = [{**first, "status": "running"}, {"status": "stopped", "began": "resumed", "launch": 2}]
    fake_job(sweep, 1, {**requeued, "earlier_attempts": [*attempts, {**requeued, "status": "stopped"}]})
    # 2: done in launch 2, extended (trainer.max_steps) in launch 3: it continued from its last.ckpt.
    fake_job(sweep, 2, {**requeued, "earlier_attempts": [{**first, "launch": 2}]})
    # 3: started fresh by launch 3; 4: never begun (a job dir the SLURM launcher recorded, no run.json).
    fake_job(sweep, 3, {**first, "launch": 3, "status": "running"}, done=False)
    fake_job(sweep, 4, None, done=False)
    text, rows = report_in_process(sweep, capsys)
    assert {n: r["began"] for n, r in rows.items()} == {
        "0": "done",
        "1": "resumed",
        "2": "resumed",
        "3": "started",
        "4": "-",
    }
    assert {r["launch"] for r in rows.values()} == {"3"} and "launch 3" in text
    summary = "launch 3: 5 jobs: 1 done before, 2 resumed, 1 started, 1 not begun"
    assert summary in text and summary in (sweep / "report.md").read_text()


def test_records_from_before_launches_were_numbered_are_launch_1(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("seed: 1\n")
    fake_job(sweep, 0, {"status": "done"})
    fake_job(sweep, 1, {"status": "done", "earlier_attempts": [{"status": "stopped"}]})
    text, rows = report_in_process(sweep, capsys)
    assert {n: (r["launch"], r["began"]) for n, r in rows.items()} == {
        "0": ("1", "started"),
        "1": ("1", "started"),
    }
    assert "launch 1: 2 jobs: 2 started" in text


@pytest.mark.slow
def test_report_before_and_after_a_whole_sweep_resume(tmp_path, capsys):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    kill = [
        "+callbacks.kill._target_=kill_sweep.KillSweepAt",
        "+callbacks.kill.job=1",
        "+callbacks.kill.step=12",
        f"+callbacks.kill.marker={tmp_path / 'killed'}",
        "hydra.job.config.override_dirname.exclude_keys=[data.path,resume,callbacks.kill._target_,"
        "callbacks.kill.job,callbacks.kill.step,callbacks.kill.marker]",
    ]
    sweep = tmp_path / "sweep"
    killed = run_forked(  # a real (forked) process: the callback SIGKILLs its process group
        ["-m", *TINY_RUN, "data=text", f"data.path={corpus}", "seed=1,2,3", *kill, "hydra.sweep.dir=sweep"],
        tmp_path,
        env=WITH_HELPERS,
        start_new_session=True,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    text, rows = report_in_process(sweep, capsys)
    assert {n: (r["status"], r["began"]) for n, r in rows.items()} == {
        "0": ("done", "started"),
        "1": ("running", "started"),
    }
    assert "launch 1: 2 jobs: 2 started" in text

    resumed = cli_in_process(["-m", f"resume={sweep}"], tmp_path, env=WITH_HELPERS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    text, rows = report_in_process(sweep, capsys)
    assert {n: (r["status"], r["began"]) for n, r in rows.items()} == {
        "0": ("done", "done"),
        "1": ("done", "resumed"),
        "2": ("done", "started"),
    }
    assert "launch 2: 3 jobs: 1 done before, 1 resumed, 1 started" in text, text
    assert "seed" in rows["2"] and "resume" not in rows["2"] and "+resume_launch" not in rows["2"]
