"""quality: charrnn-train experiment=shakespeare (the real CLI, --seconds of training); the
full-split val loss at 30 s and at the end, from the run's TensorBoard wall times, beside anchors,
and the best checkpoint's loss on the standard split (the last 10 %) through charrnn-eval."""

from __future__ import annotations

import argparse
import importlib.resources
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from .common import REPO, Row, compose, last_line, note

# Anchors measured elsewhere (2 CPU cores), for comparison only.
NANOGPT_CPU = (1.90, 210)  # nanoGPT's CPU recipe on Tiny Shakespeare: val loss 1.90 after ~210 s
BARE_LSTM = (1.505, 200)  # bare PyTorch LSTM-256, stateful: val loss 1.505 after 200 s
TARGET_END, TARGET_30S = 1.50, 1.75  # val loss (nats/char) at --seconds (240) and at 30 s


def overrides_for(args: argparse.Namespace) -> tuple[list[str], list[str], bool]:
    """(setup, all overrides, whether conf/experiment/shakespeare.yaml exists)."""
    has_experiment = (importlib.resources.files("charrnn.conf") / "experiment" / "shakespeare.yaml").is_file()
    # The fallback validates often enough to draw a curve (the default is every 250 steps).
    setup = (
        ["experiment=shakespeare"]
        if has_experiment
        else ["data=shakespeare", "model=lstm", "trainer.val_check_interval=100"]
    )
    s = args.seconds
    if (
        has_experiment
        and compose(["experiment=shakespeare", "output_dir=."]).scheduler.get("max_seconds") is not None
    ):
        setup.append(f"scheduler.max_seconds={s}")  # the schedule follows the time budget given here
    max_time = f"00:{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
    overrides = [
        *setup,
        f"data.path={args.corpus}",
        f"trainer.max_time={max_time}",
        "trainer.enable_progress_bar=false",
    ]
    return setup, overrides, has_experiment


def val_curve(run: Path) -> list[tuple[float, float]]:
    """(seconds since the run's first TensorBoard event, val/loss) at each validation."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    if "val/loss" not in acc.Tags()["scalars"]:
        return []
    t0 = acc.FirstEventTimestamp()
    return [(e.wall_time - t0, e.value) for e in acc.Scalars("val/loss")]


def curve_rows(curve: list[tuple[float, float]], seconds: int) -> list[Row]:
    early = [c for c in curve if c[0] <= 30.0] or curve[:1]
    t30, l30 = early[-1]
    t_end, l_end = curve[-1]

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    at_30 = " (last by 30 s)" if t30 <= 30 else " (none by 30 s; the first)"
    end_verdict = mark(l_end <= TARGET_END) if seconds == 240 else f"(budget here {seconds} s)"
    anchors = (
        f"anchors: nanoGPT CPU {NANOGPT_CPU[0]} @ ~{NANOGPT_CPU[1]} s, "
        f"bare LSTM-256 {BARE_LSTM[0]} @ {BARE_LSTM[1]} s"
    )
    return [
        (
            "quality",
            f"val loss @ {t30:.0f} s{at_30}",
            f"{l30:.3f} nats = {l30 / math.log(2):.3f} bpc",
            f"target <= {TARGET_30S} {mark(l30 <= TARGET_30S and t30 <= 30)}",
        ),
        (
            "quality",
            f"val loss @ {t_end:.0f} s (end)",
            f"{l_end:.3f} nats = {l_end / math.log(2):.3f} bpc",
            f"target <= {TARGET_END} (<= {TARGET_END / math.log(2):.2f} bpc) at 240 s {end_verdict}; "
            f"{anchors}",
        ),
        (
            "quality",
            "curve (s: val loss)",
            "  ".join(f"{t:.0f}:{v:.3f}" for t, v in curve),
            "wall time from the run's first TensorBoard event",
        ),
    ]


def run(args: argparse.Namespace) -> list[Row]:
    setup, overrides, has_experiment = overrides_for(args)
    workdir = REPO / "outputs" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    note(f"quality: charrnn-train {' '.join(overrides)}  (~{args.seconds} s)")
    exe = Path(sys.executable).parent / "charrnn-train"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(exe), *overrides], cwd=workdir, capture_output=True, text=True, env=env)
    run_line = [line for line in proc.stdout.splitlines() if line.startswith("run dir:")]
    if proc.returncode != 0 or not run_line:
        return [("quality", "charrnn-train failed", f"exit {proc.returncode}", last_line(proc.stderr))]
    run_dir = Path(run_line[0].split(":", 1)[1].strip())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    fallback = "" if has_experiment else "  (conf/experiment/shakespeare.yaml missing: fallback)"
    shown = run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir
    rows: list[Row] = [
        (
            "quality",
            "setup",
            " ".join(setup) + fallback,
            f"{metrics['global_step']} steps, {metrics['train_chars_per_second']} chars/s; run {shown}",
        )
    ]
    rows.append(standard_val_row(run_dir, env))
    curve = val_curve(run_dir)
    if not curve:
        return rows + [("quality", "val/loss", "none logged", "validation never ran within the budget")]
    return rows + curve_rows(curve, args.seconds)


def standard_val_row(run_dir: Path, env: dict[str, str]) -> Row:
    """The best checkpoint on the standard split (val = the corpus's last 10 %, as nanoGPT), through the real
    charrnn-eval, beside the project's own val split: the figure that compares with published ones."""
    exe = Path(sys.executable).parent / "charrnn-eval"
    proc = subprocess.run(
        [str(exe), str(run_dir), "split=val", "--json"], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return (
            "quality",
            "standard val (last 10 %)",
            f"charrnn-eval exit {proc.returncode}",
            last_line(proc.stderr),
        )
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    held_out = (
        "held out" if record["standard_val_held_out"] else "NOT held out (data.split trains on part of it)"
    )
    return (
        "quality",
        "standard val (last 10 %), best ckpt",
        f"{record['standard_val_loss']:.3f} nats",
        f"project's val split {record['loss']:.3f} nats; {held_out}",
    )
