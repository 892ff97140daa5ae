"""packing: aggregate chars/s of N small charrnn-train jobs (LSTM-256, 32x64) training at once on one
device, N = 1, 2, 4, 8 (--packing-jobs). On CUDA: one sweep (-m, hydra/launcher=processes: each job its
own process, all started at once) with trainer=gpu and device_lease.jobs_per_gpu=N, so the N jobs lease
the N slots of GPU 0 and train side by side. On CPU the lease pins GPU trainers only: N plain
charrnn-train processes are started at once instead (no lease), each with --threads // N torch threads.

Throughput comes from what the runs record: the wall times of each job's TensorBoard train/loss points.
The aggregate is every job's chars trained inside the window in which all N were training, over that
window; a job's own rate is over its own points."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import Row, last_line, note

JOB = ["data=text", "model=lstm", "model.hidden_size=256", "data.batch_size=32", "data.seq_len=64"]
SMALL = ["model.hidden_size=32", "data.batch_size=4", "data.seq_len=16"]


def plan(args: argparse.Namespace) -> tuple[list[str], int, int]:
    """(overrides of every job, steps, steps between train/loss points)."""
    steps, every = (40, 5) if args.small else ((400, 20) if args.device == "cuda" else (150, 10))
    job = [*JOB, *(SMALL if args.small else []), f"data.path={args.corpus}", f"trainer.max_steps={steps}"]
    job += [
        f"trainer.val_check_interval={steps}",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    ]
    job += [f"trainer.log_every_n_steps={every}", "trainer.enable_progress_bar=false", "sample.length=0"]
    return job, steps, every


def launch(args: argparse.Namespace, n: int, job: list[str], where: Path) -> list[subprocess.Popen]:
    exe = str(Path(sys.executable).parent / "charrnn-train")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if args.device == "cuda":
        sweep = [
            "-m",
            "hydra/launcher=processes",
            "hydra.launcher.gpus_per_node=1",
            f"hydra.launcher.cpus_per_task={max(1, (os.cpu_count() or 1) // n)}",
            "trainer=gpu",
            "device_lease.pool=[0]",
            f"device_lease.jobs_per_gpu={n}",
            f"device_lease.lock_dir={where / 'locks'}",
            f"hydra.sweep.dir={where}",
            "seed=" + ",".join(str(k + 1) for k in range(n)),
        ]
        return [
            subprocess.Popen(
                [exe, *job, *sweep],
                env=env,
                cwd=where,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        ]
    env["OMP_NUM_THREADS"] = str(max(1, args.threads // n))
    return [
        subprocess.Popen(
            [exe, *job, "trainer=cpu", f"seed={k + 1}", f"hydra.run.dir={where / f'job{k}'}"],
            env=env,
            cwd=where,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(n)
    ]


def points(run: Path) -> list[tuple[float, int]]:
    """(wall time, step) of a run's train/loss points, from its TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return sorted((e.wall_time, e.step) for e in acc.Scalars("train/loss"))


def steps_at(pts: list[tuple[float, int]], t: float) -> float:
    """A job's step count at wall time t, linear between its points."""
    for (t0, s0), (t1, s1) in zip(pts, pts[1:]):
        if t0 <= t <= t1:
            return s0 + (s1 - s0) * (t - t0) / (t1 - t0)
    raise ValueError("t outside the job's points")


def measure(
    args: argparse.Namespace, n: int, job: list[str], chars: int, root: Path
) -> tuple[float, ...] | str:
    """(aggregate chars/s, median per-job chars/s, window s, window / mean job time) of n jobs at once,
    or why they failed."""
    where = root / f"N{n}"
    where.mkdir()
    procs = launch(args, n, job, where)
    errors = [p.communicate()[1] for p in procs]
    if any(p.returncode != 0 for p in procs):
        return f"failed: {last_line(next(e for p, e in zip(procs, errors) if p.returncode != 0))}"
    runs = sorted(m.parent for m in where.rglob("metrics.json"))
    if len(runs) != n:
        return f"failed: {len(runs)} of {n} runs wrote metrics.json"
    pts = [points(run) for run in runs]
    start, end = max(p[0][0] for p in pts), min(p[-1][0] for p in pts)
    own = sorted(chars * (p[-1][1] - p[0][1]) / (p[-1][0] - p[0][0]) for p in pts)
    if end <= start:
        return "failed: the jobs never trained at the same time"
    together = sum(steps_at(p, end) - steps_at(p, start) for p in pts) * chars / (end - start)
    share = (end - start) / (sum(p[-1][0] - p[0][0] for p in pts) / n)
    return together, own[len(own) // 2], end - start, share


def run(args: argparse.Namespace) -> list[Row]:
    job, steps, every = plan(args)
    small = "--small " if args.small else ""
    chars = 4 * 16 if args.small else 32 * 64
    how = (
        "one sweep, hydra/launcher=processes, device_lease.jobs_per_gpu=N on GPU 0"
        if args.device == "cuda"
        else f"CPU: N plain processes at once, no device lease (it pins GPU trainers only), "
        f"{args.threads} // N threads each"
    )
    rows: list[Row] = []
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.packing_jobs:
            found = measure(args, n, job, chars, Path(tmp))
            note(f"packing: {n} job(s): {found}")
            if isinstance(found, str):
                rows.append(("packing", f"{n} job(s) at once", found, how))
                continue
            together, each, window, share = found
            base = base or together / n
            shaky = (
                ""
                if share >= 0.5
                else f"; UNRELIABLE: the jobs overlapped for {share:.0%} of a job's training"
            )
            rows.append(
                (
                    "packing",
                    f"{n} job(s) at once: aggregate chars/s",
                    f"{together:,.0f} (x{together / base:.2f} of one job; per job {each:,.0f})",
                    f"{small}{how}; {steps} steps/job, TensorBoard points every {every}, "
                    f"all {n} training for {window:.1f} s{shaky}",
                )
            )
    return rows
