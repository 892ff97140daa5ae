"""overhead: the project's Lightning loop (CharRNNModule + Trainer as charrnn-train builds it, no
validation or checkpoints) vs a bare PyTorch loop on the same batches, and vs the same module with
its __setattr__ override removed. Interleaved rounds, the order rotating each round, medians:
LSTM-256 32x64 on the corpus, the notebook's RNN-8 on "hello".

The override's own share is also timed within single fits whose module swaps class every few
steps (with an A/A control): on a shared machine, separate fits differ by more than that share."""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.nn import functional as F

from charrnn.core.windows import IGNORE_INDEX
from charrnn.lit.module import CharRNNModule

from .common import Row, compose, detach, note

NOTEBOOK_ANCHOR = "bare 435 steps/s, stock Lightning + self.log + clipping 195 steps/s (0.45)"
# (name, overrides, steps per fit, warmup steps not timed, target Lightning / bare, steps per class swap when alternating)
SETUPS = (
    (
        "LSTM-256 32x64",
        ["data=text", "model=lstm", "model.hidden_size=256", "data.batch_size=32", "data.seq_len=64"],
        120,
        10,
        0.95,
        2,
    ),
    (
        "notebook RNN-8 'hello' 1x4",
        ["data=hello", "model=rnn", "model.hidden_size=8", "optim.lr=0.01", "trainer.gradient_clip_val=1.0"],
        800,
        100,
        0.60,
        5,
    ),
)
SIDES = ("bare", "Lightning", "no override")


class WithoutOverride(CharRNNModule):
    """CharRNNModule minus its __setattr__ override: every attribute goes through nn.Module's."""

    __setattr__ = L.LightningModule.__setattr__


class SameOverride(CharRNNModule):
    """CharRNNModule under another name: the A/A control of the alternating measurement."""


HAS_OVERRIDE = CharRNNModule.__setattr__ is not L.LightningModule.__setattr__


def rate(times: list[float], warmup: int) -> float:
    """Steps per second after the first `warmup` steps."""
    return (len(times) - 1 - warmup) / (times[-1] - times[warmup])


def bare_round(cfg: Any, dm: Any, steps: int, warmup: int) -> float:
    """Steps/s of a plain PyTorch loop: the same model, optimizer, schedule, clipping and batches."""
    model = instantiate(cfg.model, vocab_size=len(dm.vocab)).train()
    opt = instantiate(cfg.optim)(model.parameters())
    # The same learning-rate schedule the module steps (the project's default is warmup + cosine).
    sched = instantiate(cfg.scheduler)(opt, total_steps=steps) if cfg.get("scheduler") else None
    clip = cfg.trainer.gradient_clip_val
    times: list[float] = []
    loader = dm.train_dataloader()  # made once and iterated once per epoch, as Lightning does
    while len(times) < steps:
        state = None  # a new epoch starts from a zero state, as the module does
        for batch in loader:
            x, y = dm.on_after_batch_transfer(batch, 0)
            logits, state = model(x, detach(state))
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE_INDEX
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if sched is not None:
                sched.step()
            times.append(time.perf_counter())
            if len(times) >= steps:
                break
    return rate(times, warmup)


class StepTimes(Callback):
    """When each training step ends, and which module class ran it; with `swap` (a class), the
    module swaps between CharRNNModule and `swap` every `block` steps once `warmup` steps are done."""

    def __init__(self, warmup: int = 0, block: int = 0, swap: type | None = None) -> None:
        self.times: list[float] = []
        self.classes: list[type] = []
        self.warmup, self.block, self.swap = warmup, block, swap

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *_: Any) -> None:
        self.times.append(time.perf_counter())
        self.classes.append(type(pl_module))
        done = len(self.times) - self.warmup
        if self.swap is not None and done >= 0 and done % self.block == 0:
            pl_module.__class__ = CharRNNModule if type(pl_module) is self.swap else self.swap


def fit(cfg: Any, dm: Any, steps: int, logdir: str, module_cls: type, timer: StepTimes) -> None:
    """The Trainer charrnn-train builds (minus validation and checkpoints) fitting module_cls for `steps` steps."""
    model = instantiate(cfg.model, vocab_size=len(dm.vocab))
    module = module_cls(
        model,
        dm.vocab,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler),
        stateful=dm.batching == "stateful",
        sample_length=0,
    )
    callbacks = [
        c for c in (instantiate(c) for c in cfg.callbacks.values()) if not isinstance(c, ModelCheckpoint)
    ]
    trainer = instantiate(
        cfg.trainer,
        max_steps=steps,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=instantiate(cfg.logger.tensorboard, save_dir=logdir),
        callbacks=[*callbacks, timer],
    )
    trainer.fit(module, datamodule=dm)


def lightning_round(cfg: Any, dm: Any, steps: int, warmup: int, logdir: str, module_cls: type) -> float:
    """Steps/s of one fit of module_cls."""
    timer = StepTimes()
    fit(cfg, dm, steps, logdir, module_cls, timer)
    return rate(timer.times, warmup)


def alternating_round(cfg: Any, dm: Any, setup: tuple, logdir: str, other: type) -> float:
    """Median step time as `other` / as CharRNNModule, in one fit whose module swaps between the two
    classes every few steps: load changes longer than that hit both alike, and medians drop preemptions."""
    _, _, steps, warmup, _, block = setup
    timer = StepTimes(warmup, block, other)
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
            + f"; with/without override {found['alternating'][-1]:.3f}, A/A control {found['control'][-1]:.3f}"
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
    what = (
        "> 1: the override makes training faster"
        if HAS_OVERRIDE
        else "CharRNNModule has no __setattr__ override: both sides run the same code"
    )
    return [
        ("overhead", f"{name}: Lightning / bare", f"{lt / b:.2f}", f"target >= {target:.2f} {ok}"),
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
            f"{spread(found['alternating'])}; A/A control {spread(found['control'])}; separate fits {spread(separate)}",
            f"{what}; median (min to max) over rounds of: one fit swapping the module's class every {block} steps, "
            f"median step time of each; the control swaps to an identical class",
        ),
    ]


def run(args: argparse.Namespace) -> list[Row]:
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for setup in SETUPS:
            overrides = setup[1] + ([f"data.path={args.corpus}"] if "data=text" in setup[1] else [])
            cfg = compose([*overrides, f"output_dir={tmp}"])
            torch.use_deterministic_algorithms(
                bool(cfg.trainer.deterministic)
            )  # what the Trainer sets, for every side
            dm = instantiate(cfg.data)
            dm.setup("fit")
            found = measure(setup[0], cfg, dm, setup, args.rounds, tmp)
            rows += setup_rows(setup, found, dm.batch_size * dm.seq_len)
    return rows
