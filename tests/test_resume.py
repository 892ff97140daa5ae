"""Stop anywhere, resume exactly: real runs killed with SIGKILL, SIGTERM and SIGINT at random moments."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_TEXT, only_run_dir, run_cli

pytestmark = pytest.mark.slow

# Mid-epoch checkpoints (validation every 7 steps, epochs of 11 batches), a 2-layer LSTM with dropout.
MID_EPOCH_RUN = [
    "model.hidden_size=16", "model.num_layers=2", "model.dropout=0.1", "data.seq_len=16", "data.batch_size=8",
    "trainer.max_steps=60", "trainer.val_check_interval=7", "trainer.enable_progress_bar=false", "sample.length=10",
]
EXIT_CODES = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}


def final_metrics(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: metrics[k] for k in ("best_val_bpc", "final", "test", "global_step", "epochs")}


def lr_curve(run: Path) -> dict[int, float]:
    from conftest import read_scalars

    return dict(read_scalars(run / "tensorboard")["lr-Adam"])  # by step: a resumed stretch rewrites the same steps


def kill_and_resume(args: list[str], cwd: Path, sig: signal.Signals, delay: float) -> tuple[Path, subprocess.CompletedProcess]:
    """Start a run, send ``sig`` ``delay`` s after its first checkpoint, resume it."""
    exe = Path(sys.executable).parent / "charrnn-train"
    cwd.mkdir()
    child = subprocess.Popen([str(exe), *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 120
    ready = "outputs/runs/*/*/checkpoints/last.ckpt"  # training is under way (a signal during start-up is not handled yet)
    while not list(cwd.glob(ready)) and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    child.send_signal(sig)
    _, stderr = child.communicate(timeout=120)
    run = only_run_dir(cwd)
    if (run / "metrics.json").exists():
        return run, None  # it had finished: not a kill point
    assert child.returncode == EXIT_CODES[sig], stderr[-2000:]
    if sig != signal.SIGKILL:
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("charrnn-train: stopped by") and f"resume={run}" in last, stderr[-2000:]
        assert json.loads((run / "run.json").read_text())["status"] == "stopped"
    resumed = run_cli([f"resume={run}"], cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return run, resumed


@pytest.mark.parametrize("batching", ["stateful", "random"])
def test_runs_killed_at_random_moments_resume_to_identical_metrics(tmp_path, batching):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT)
    args = ["data=text", f"data.path={corpus}", f"data.batching={batching}", *MID_EPOCH_RUN]
    (tmp_path / "straight").mkdir()
    proc = run_cli(args, cwd=tmp_path / "straight")
    assert proc.returncode == 0, proc.stderr[-2000:]
    straight = only_run_dir(tmp_path / "straight")
    expected, expected_lr = final_metrics(straight), lr_curve(straight)
    window = 0.8 * json.loads((straight / "metrics.json").read_text())["fit_seconds"]
    rng = random.Random()
    tally = []
    for n, sig in enumerate([signal.SIGKILL, signal.SIGTERM, signal.SIGINT]):
        delay = rng.uniform(0.0, window)
        run, resumed = kill_and_resume(args, tmp_path / f"kill{n}", sig, delay)
        if resumed is None:
            continue
        same = final_metrics(run) == expected and lr_curve(run) == expected_lr
        tally.append((sig.name, round(delay, 2), same))
        assert final_metrics(run) == expected, f"{sig.name} after {delay:.2f}s"
        assert lr_curve(run) == expected_lr, f"{sig.name} after {delay:.2f}s: the learning rate did not continue"
    assert tally, "every run finished before it could be stopped"
    print(f"\n{batching}: {sum(s for *_, s in tally)}/{len(tally)} identical: {tally}")
