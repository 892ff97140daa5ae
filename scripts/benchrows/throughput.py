"""throughput: chars/s of the GPU recipe's model (experiment=shakespeare_gpu: LSTM-1024x2, 128 streams of
128, bf16 autocast, AdamW with clipping, dropout 0.3) trained by the project's loop vs a bare loop on the
same device and batches; interleaved rounds, medians. On a CPU without a bf16 LSTM kernel it trains in
float32 (the row names the precision). On CPU the model is far too big for a quick run:
--small shrinks it (LSTM-64x2, 8x16) to a smoke of seconds; without --small it runs full size, slowly.
AdamW runs its foreach kernels on CUDA on both sides: Lightning refuses gradient clipping with a fused
optimizer under mixed precision."""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import warnings
from typing import Any

import torch
from hydra.utils import instantiate

from charrnn.lit.module import CharRNNModule

from .common import Row, compose, note
from .loops import bare_round, lightning_round

SMALL = ["model.hidden_size=64", "data.batch_size=8", "data.seq_len=16"]


def cpu_bf16_lstm(cfg: Any, vocab: int) -> bool:
    """Whether this CPU trains the model under bf16 autocast (oneDNN refuses an LSTM without bf16 support)."""
    model = instantiate(cfg.model, vocab_size=vocab).train()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.zeros(2, 3, dtype=torch.long))[0].float().sum().backward()
        return True
    except RuntimeError:
        return False


def steps_for(args: argparse.Namespace) -> tuple[int, int]:
    """(steps per fit, warmup steps not timed)."""
    if args.small:
        return 8, 2
    return (60, 10) if args.device == "cuda" else (8, 2)


def run(args: argparse.Namespace) -> list[Row]:
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    trainer = (
        ["trainer=gpu_bf16"] if args.device == "cuda" else ["trainer=cpu", "trainer.precision=bf16-mixed"]
    )
    steps, warmup = steps_for(args)
    found: dict[str, list[float]] = {"bare": [], "project": []}
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "experiment=shakespeare_gpu",
            f"data.path={args.corpus}",
            *trainer,
            "trainer.max_time=null",
        ]
        overrides += [*(SMALL if args.small else []), f"output_dir={tmp}"]
        cfg = compose(overrides)
        if args.device == "cpu" and not cpu_bf16_lstm(cfg, 65):
            cfg = compose([*overrides, "trainer.precision=32-true"])  # this CPU has no bf16 LSTM
        torch.use_deterministic_algorithms(bool(cfg.trainer.deterministic))
        dm = instantiate(cfg.data)
        dm.setup("fit")
        sides = {
            "bare": lambda: bare_round(cfg, dm, steps, warmup),
            "project": lambda: lightning_round(cfg, dm, steps, warmup, tmp, CharRNNModule),
        }
        for r in range(args.rounds):
            for side in ("bare", "project") if r % 2 == 0 else ("project", "bare"):
                found[side].append(sides[side]())
            got = f"bare {found['bare'][-1]:.2f}, project {found['project'][-1]:.2f}"
            note(f"throughput: round {r + 1}/{args.rounds}: steps/s {got}")
        chars = dm.batch_size * dm.seq_len
        shape = f"{cfg.model.hidden_size}x{cfg.model.num_layers} {dm.batch_size}x{dm.seq_len}"
        model = f"LSTM-{shape} {cfg.trainer.precision}"
    b, p = (statistics.median(found[s]) for s in ("bare", "project"))
    ratios = [x / y for x, y in zip(found["project"], found["bare"])]
    where = f"{args.device}{' --small' if args.small else ''}"
    return [
        (
            "throughput",
            f"{model}: project / bare ({where})",
            f"{p / b:.2f}",
            f"per round {min(ratios):.2f} to {max(ratios):.2f}",
        ),
        (
            "throughput",
            f"{model}: chars/s ({where})",
            f"bare {b * chars:,.0f}, project {p * chars:,.0f}",
            f"median of {args.rounds} interleaved rounds of {steps} steps ({warmup} untimed)",
        ),
    ]
