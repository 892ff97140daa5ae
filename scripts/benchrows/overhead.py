"""overhead: the project's Lightning loop (CharRNNModule + Trainer as charrnn-train builds it, no
validation) vs a bare PyTorch loop on the same batches and device, and vs the same module with
its __setattr__ override removed. Interleaved rounds, the order rotating each round, medians:
LSTM-256 32x64 on the corpus, the notebook's RNN-8 on "hello".

The override's own share is also timed within single fits whose module swaps class every few
steps (with an A/A control): on a shared machine, separate fits differ by more than that share."""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import warnings
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate

from charrnn.lit.module import CharRNNModule

from .common import Row, compose, note
from .loops import StepTimes, bare_round, fit, lightning_round

NOTEBOOK_ANCHOR = "bare 435 steps/s, stock Lightning + self.log + clipping 195 steps/s (0.45)"
# (name, overrides, steps per fit, warmup steps not timed, target Lightning / bare, steps per class swap when
# alternating)
SETUPS = (
    (
        "LSTM-256 32x64",
        ["data=text", "model=lstm", "model.hidden_size=256", "data.batch_size=32", "data.seq_len=64"],
        120,
        10,
        0.97,
        2,
    ),
    (
        "notebook RNN-8 'hello' 1x4",
        ["data=hello", "model=rnn", "model.hidden_size=8", "optim.lr=0.01", "trainer.gradient_clip_val=1.0"],
        800,
        100,
        0.70,
        5,
    ),
)
# --small: the same setups shrunk to a smoke of seconds (the figures then mean little).
SMALL = {"LSTM-256 32x64": (["model.hidden_size=32", "data.batch_size=4", "data.seq_len=16"], 20, 4)}
SIDES = ("bare", "Lightning", "no override")


class WithoutOverride(CharRNNModule):
    """CharRNNModule minus its __setattr__ override: every attribute goes through nn.Module's."""

    __setattr__ = L.LightningModule.__setattr__


class SameOverride(CharRNNModule):
    """CharRNNModule under another name: the A/A control of the alternating measurement."""


HAS_OVERRIDE = CharRNNModule.__setattr__ is not L.LightningModule.__setattr__


def alternating_round(cfg: Any, dm: Any, setup: tuple, logdir: str, other: type) -> float:
    """Median step time as `other` / as CharRNNModule, in one fit whose module swaps between the two
    classes every few steps: load changes longer than that hit both alike, and medians drop preemptions."""
    _, _, steps, warmup, _, block = setup
    timer = StepTimes(warmup, steps, block, other, sync_all=True)  # per-step times: on CUDA each waits
    fit(cfg, dm, steps, logdir, CharRNNModule, timer)
    # Step k took times[k] - times[k - 1] and ran as classes[k] (the first `warmup` steps are not counted).
    spent: dict[type, list[float]] = {CharRNNModule: [], other: []}
    for cls, t0, t1 in zip(timer.classes[warmup:], timer.times[warmup - 1 :], timer.times[warmup:]):
        spent[cls].append(t1 - t0)
    return statistics.median(spent[other]) / statistics.median(spent[CharRNNModule])


def measure(name: str, cfg: Any, dm: Any, setup: tuple, rounds: int, logdir: str) -> dict[str, list[float]]:
    """Per round: steps/s of every side (their order rotating) and the two alternating fits' ratios."""
    _, _, steps, warmup, _, _ = setup
    runs = {
        "bare": lambda: bare_round(cfg, dm, steps, warmup),
        "Lightning": lambda: lightning_round(cfg, dm, steps, warmup, logdir, CharRNNModule),
        "no override": lambda: lightning_round(cfg, dm, steps, warmup, logdir, WithoutOverride),
    }
    found: dict[str, list[float]] = {key: [] for key in (*SIDES, "alternating", "control")}
    for r in range(rounds):
        for side in SIDES[r % 3 :] + SIDES[: r % 3]:
            found[side].append(runs[side]())
        found["alternating"].append(alternating_round(cfg, dm, setup, logdir, WithoutOverride))
        found["control"].append(alternating_round(cfg, dm, setup, logdir, SameOverride))
        note(
            f"overhead: {name} round {r + 1}/{rounds}: steps/s "
            + ", ".join(f"{s} {found[s][-1]:,.1f}" for s in SIDES)
            + f"; with/without override {found['alternating'][-1]:.3f}"
            + f", A/A control {found['control'][-1]:.3f}"
        )
    return found


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f} to {max(values):.3f})"


def setup_rows(setup: tuple, found: dict[str, list[float]], chars: int) -> list[Row]:
    name, _, steps, _, target, block = setup
    b, lt, plain = (statistics.median(found[s]) for s in SIDES)
    separate = [w / wo for w, wo in zip(found["Lightning"], found["no override"])]
    ok = "ok" if lt / b >= target else "MISSED"
    anchor = f"; anchor: {NOTEBOOK_ANCHOR}" if target < 0.9 else ""
    paired = spread([lt / b for lt, b in zip(found["Lightning"], found["bare"])])
    what = (
        "> 1: the override makes training faster"
        if HAS_OVERRIDE
        else "CharRNNModule has no __setattr__ override: both sides run the same code"
    )
    return [
        (
            "overhead",
            f"{name}: Lightning / bare",
            f"{lt / b:.2f}",
            f"target >= {target:.2f} {ok}; per round (min to max): {paired}",
        ),
        (
            "overhead",
            f"{name}: chars/s (steps/s)",
            f"bare {b * chars:,.0f} ({b:,.1f}), Lightning {lt * chars:,.0f} ({lt:,.1f}), "
            f"Lightning without __setattr__ override {plain * chars:,.0f} ({plain:,.1f})",
            f"median of {len(separate)} interleaved rounds of {steps} steps{anchor}",
        ),
        (
            "overhead",
            f"{name}: __setattr__ override, speed with / without",
            f"{spread(found['alternating'])}; A/A control {spread(found['control'])}; separate fits "
            f"{spread(separate)}",
            f"{what}; median (min to max) over rounds of: one fit swapping the module's class every {block} "
            "steps, median step time of each; the control swaps to an identical class",
        ),
    ]


def run(args: argparse.Namespace) -> list[Row]:
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for setup in SETUPS:
            if args.small:
                extra, steps, warmup = SMALL.get(setup[0], ([], 40, 10))
                setup = (setup[0] + " (--small)", setup[1] + extra, steps, warmup, *setup[4:])
            overrides = setup[1] + ([f"data.path={args.corpus}"] if "data=text" in setup[1] else [])
            # On CUDA: one GPU in float32, fused Adam on both sides (Lightning clips with it outside AMP).
            overrides += ["trainer=gpu", "optim.fused=true"] if args.device == "cuda" else []
            cfg = compose([*overrides, f"output_dir={tmp}"])
            # What the Trainer sets, for every side.
            torch.use_deterministic_algorithms(bool(cfg.trainer.deterministic))
            dm = instantiate(cfg.data)
            dm.setup("fit")
            found = measure(setup[0], cfg, dm, setup, args.rounds, tmp)
            rows += setup_rows(setup, found, dm.batch_size * dm.seq_len)
    return rows
