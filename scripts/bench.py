#!/usr/bin/env python
"""charrnn's benchmarks, printed as one table; every ratio is measured side by side in this run.

rows (--only NAME[,NAME]), one module each in scripts/benchrows/:
  quality   charrnn-train experiment=shakespeare (real CLI, --seconds of training): full-split val
            loss at 30 s and at the end, from the run's TensorBoard wall times, beside the anchors
  overhead  the project's Lightning loop (CharRNNModule + Trainer as charrnn-train builds it, no
            validation or checkpoints) vs a bare PyTorch loop on the same batches, and vs the same
            module without its __setattr__ override (that override's own share, also timed within
            one fit that swaps the module's class every few steps, beside an A/A control);
            interleaved rounds, medians: LSTM-256 32x64 on the corpus, the notebook's RNN-8 on "hello"
  flops     achieved FLOP/s of LSTM training (forward + backward + Adam) vs this machine's float32
            matmul peak (2048^3), through CharRNN (one-hot) and a bare nn.LSTM (dense inputs)
  sampling  chars/s and time to first char of charrnn-sample's generator vs calling the model
            (nn.LSTM) once per character
  memory    peak RSS of LSTM-512 64x128 training (fresh process each), corpus as int64 vs one-hot
  throughput  chars/s of the GPU recipe's LSTM-1024x2 128x128 bf16 (experiment=shakespeare_gpu), project
            loop vs bare loop on --device (--small: a scaled-down smoke)
  packing   aggregate chars/s of 1, 2, 4, 8 concurrent charrnn-train jobs (LSTM-256 32x64) on one
            device: on CUDA a sweep sharing GPU 0 through the device lease (jobs_per_gpu=N), on CPU N
            plain processes; throughput read from the runs' TensorBoard points

--device cuda runs overhead, throughput and packing on the GPU (the other rows stay on CPU); overhead
then trains in float32 with fused Adam on both sides.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

ROWS = ("quality", "overhead", "flops", "sampling", "memory", "throughput", "packing")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--corpus", required=True, type=Path, help="a text file, e.g. ../shared/data/tinyshakespeare.txt"
    )
    p.add_argument(
        "--only",
        default=",".join(ROWS),
        help=f"comma-separated rows to run: {', '.join(ROWS)} (default: all)",
    )
    p.add_argument(
        "--threads", type=int, default=2, help="torch threads, here and in every subprocess (default 2)"
    )
    p.add_argument(
        "--seconds",
        type=int,
        default=240,
        help="quality: training time budget, trainer.max_time (default 240)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="overhead: interleaved rounds per side; medians shown (default 3)",
    )
    p.add_argument(
        "--memory-steps", type=int, default=5, help="memory: training steps per measurement (default 5)"
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="overhead, throughput, packing: the device they train on (default cpu)",
    )
    p.add_argument(
        "--small", action="store_true", help="throughput, packing: a scaled-down model, a smoke of seconds"
    )
    p.add_argument(
        "--packing-jobs", default="1,2,4,8", help="packing: the numbers of jobs at once (default 1,2,4,8)"
    )
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one memory measurement in a fresh process
    args = p.parse_args(argv)
    args.only = [r.strip() for r in args.only.split(",") if r.strip()]
    if unknown := [r for r in args.only if r not in ROWS]:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if not args.corpus.is_file():
        p.error(f"--corpus {args.corpus} is not a file")
    try:
        args.packing_jobs = [int(n) for n in args.packing_jobs.split(",")]
    except ValueError:
        args.packing_jobs = []
    if not args.packing_jobs or min(args.packing_jobs) < 1:
        p.error(f"--packing-jobs must be whole numbers >= 1 such as 1,2,4,8, got {args.packing_jobs!r}")
    if args.device == "cuda" and not cuda_available():
        p.error("--device cuda: torch sees no CUDA device on this machine; run with --device cpu")
    if args.threads < 1 or args.seconds < 10 or args.rounds < 1 or args.memory_steps < 1:
        p.error("--threads, --rounds and --memory-steps must be >= 1 and --seconds >= 10")
    args.corpus = args.corpus.resolve()
    return args


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def print_table(rows: list[tuple], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in ("row", "measure", "value", "target / anchor / note"):
        table.add_column(col, overflow="fold")
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            table.add_section()
        table.add_row(*(str(c) for c in row))
        previous = row[0]
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchrows/, also when imported from elsewhere
    from benchrows.common import note

    if args.child:
        importlib.import_module("benchrows.memory").child(args)
        return 0
    rows: list[tuple] = []
    for name in args.only:
        started = time.perf_counter()
        rows += importlib.import_module(f"benchrows.{name}").run(args)
        note(f"{name}: {time.perf_counter() - started:.0f} s")
    print_table(
        rows,
        f"charrnn benchmarks: {args.corpus.name}, {args.threads} thread(s), torch {torch.__version__}, "
        f"device {device_name(args.device)}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
