"""scripts/bench_search.py: the idle-time arithmetic, and the whole benchmark at a tiny scale (three real
Optuna sweeps of a few seconds' trials on a tiny corpus, each stopped by SIGTERM at its deadline)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime

import pytest

from conftest import REPO, TINY_TEXT

sys.path.insert(0, str(REPO / "scripts"))
from benchrows.search_idle import (  # noqa: E402
    Span,
    barrier_idle,
    barrier_trials_within,
    measured_idle,
    precise_span,
)


def test_precise_span_narrows_whole_second_times_with_the_millisecond_wall_time():
    true_start, wall = datetime.fromisoformat("2026-01-01T00:00:10.45+00:00").timestamp(), 9.7
    start, end = precise_span("2026-01-01T00:00:10+00:00", "2026-01-01T00:00:20+00:00", wall)
    assert abs(start - true_start) <= 0.5 and end - start == pytest.approx(wall)


def test_barrier_idle_waits_for_the_longest_of_each_batch_in_launch_order():
    durations = [10.0, 4.0, 6.0, 6.0, 3.0]  # batches [10, 4], [6, 6], [3]
    assert barrier_idle(durations, 2) == (6.0, 35.0, 19.0)
    assert barrier_trials_within(durations, 2, 16.0) == 4
    assert barrier_idle(durations, 1) == (0.0, 29.0, 29.0)


def test_measured_idle_counts_free_slots_up_to_the_deadline():
    spans = [Span(0, "done", 0, 10, 1), Span(1, "pruned", 1, 4, 1), Span(2, "stopped", 5, 20, 1)]
    # free slots: 1 in [0,1], 1 in [4,5], 1 in [10,12]; the third trial runs past the deadline (12)
    assert measured_idle(spans, 2, (0.0, 12.0)) == (4.0, 24.0)


@pytest.mark.slow
def test_the_benchmark_prints_three_sane_rows(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    work, steps = tmp_path / "work", 12
    small = ["data.seq_len=16", "data.batch_size=4", "sample.length=20", "trainer.log_every_n_steps=3"]
    # One torch thread a sweep (the figures mean nothing this small); the 2 s budget is stretched until
    # two trials have finished (--at-least), and every sweep is still stopped by SIGTERM at its deadline.
    args = ["--corpus", str(corpus), "--budget", "2", "--threads", "1", "--work", str(work)]
    args += ["--max-steps", str(steps), "--val-every", "3", "--hidden", "16,32", "--cells", "rnn,gru"]
    args += ["--at-least", "2"]
    args += [f"--override={o}" for o in small]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_search.py"), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("(a) no pruner, 1 job", "(b) median, 1 job", "(c) median, 2 jobs (no barrier)"):
        assert row in proc.stdout, proc.stdout
    assert "command: " in proc.stdout and "finished trials" in proc.stdout
    results = json.loads((work / "results.json").read_text())["results"]
    assert sorted(results) == ["a", "b", "c"] and results["a"]["pruned"] == 0
    for key, r in results.items():
        assert r["killed"] and r["exit_code"] in (143, -15), (key, r["exit_code"])  # stopped at the deadline
        assert r["complete"] >= 1 and r["failed"] == 0, (key, r)
        statuses = {t["status"] for t in r["trials"]}
        assert statuses <= {"done", "pruned", "stopped"}, (key, statuses)  # every stop saved and recorded
        assert 0 < r["steps"] <= len(r["trials"]) * steps
        best = r["best"]
        assert 0 < best["val_bpc"] < 8 and 0 < best["standard_val_loss"] < math.log(64), (key, best)
        assert set(best["params"]) >= {"optim.lr", "model.hidden_size", "model.cell"}
    c = results["c"]
    assert (
        0 <= c["measured_idle_s"] <= c["measured_slot_s"] and 0 <= c["barrier_idle_s"] <= c["barrier_slot_s"]
    )
    assert c["barrier_trials_in_window"] <= c["complete"] + c["pruned"]
