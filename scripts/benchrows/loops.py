"""The two training loops the overhead and throughput rows compare, on one device: a bare PyTorch loop
and the project's (CharRNNModule + CharDataModule in the Trainer charrnn-train builds, with its
callbacks, signal stopper, checkpoint I/O and profiler; no validation). On CUDA a timing waits for
the device (torch.cuda.synchronize) before it reads the clock."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from torch.nn import functional as F

from charrnn.cli.training import make_trainer, run_callbacks
from charrnn.core.windows import IGNORE_INDEX
from charrnn.lit.module import CharRNNModule
from charrnn.lit.stop import StopOnSignal

from .common import detach


def device_of(cfg: Any) -> torch.device:
    return torch.device("cuda" if str(cfg.trainer.accelerator) in ("gpu", "cuda") else "cpu")


def clock(device: torch.device, sync: bool = True) -> float:
    if sync and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def rate(times: list[float], warmup: int) -> float:
    """Steps per second after the first `warmup` steps."""
    return (len(times) - 1 - warmup) / (times[-1] - times[warmup])


def autocast(cfg: Any, device: torch.device) -> Any:
    """What Lightning's precision plugin puts around the forward pass (bf16-mixed: bf16 autocast)."""
    if str(cfg.trainer.precision).startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bare_round(cfg: Any, dm: Any, steps: int, warmup: int) -> float:
    """Steps/s of a plain PyTorch loop: the same model, optimizer, schedule, clipping, precision, batches."""
    device = device_of(cfg)
    model = instantiate(cfg.model, vocab_size=len(dm.vocab)).to(device).train()
    opt = instantiate(cfg.optim)(model.parameters())
    # The same learning-rate schedule the module steps (the project's default is warmup + cosine).
    sched = instantiate(cfg.scheduler)(opt, total_steps=steps) if cfg.get("scheduler") else None
    clip = cfg.trainer.gradient_clip_val
    times: list[float] = []
    loader = dm.train_dataloader()  # made once and iterated once per epoch, as Lightning does
    while len(times) < steps:
        state = None  # a new epoch starts from a zero state, as the module does
        for batch in loader:
            x, y = (t.to(device, non_blocking=True) for t in batch)
            x, y = dm.on_after_batch_transfer((x, y), 0)
            with autocast(cfg, device):
                logits, state = model(x, detach(state))
                loss = F.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE_INDEX
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if sched is not None:
                sched.step()
            times.append(clock(device, sync=len(times) in (warmup, steps - 1)))
            if len(times) >= steps:
                break
    return rate(times, warmup)


class StepTimes(Callback):
    """When each training step ends, and which module class ran it; with `swap` (a class), the
    module swaps between CharRNNModule and `swap` every `block` steps once `warmup` steps are done.
    On CUDA the clock waits for the device at the steps `rate` reads (every step with `sync_all`)."""

    def __init__(
        self,
        warmup: int = 0,
        steps: int = 0,
        block: int = 0,
        swap: type | None = None,
        sync_all: bool = False,
    ) -> None:
        self.times: list[float] = []
        self.classes: list[type] = []
        self.warmup, self.steps, self.block, self.swap, self.sync_all = warmup, steps, block, swap, sync_all

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *_: Any) -> None:
        k = len(self.times)
        self.times.append(clock(pl_module.device, self.sync_all or k in (self.warmup, self.steps - 1)))
        self.classes.append(type(pl_module))
        done = len(self.times) - self.warmup
        if self.swap is not None and done >= 0 and done % self.block == 0:
            pl_module.__class__ = CharRNNModule if type(pl_module) is self.swap else self.swap


def fit(cfg: Any, dm: Any, steps: int, logdir: str, module_cls: type, timer: StepTimes) -> None:
    """charrnn-train's Trainer (minus validation) fitting module_cls for `steps` steps."""
    model = instantiate(cfg.model, vocab_size=len(dm.vocab))
    module = module_cls(
        model,
        dm.vocab,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler),
        stateful=dm.batching == "stateful",
        sample_length=0,
    )
    stopper = StopOnSignal()
    trainer = make_trainer(
        cfg,
        [instantiate(cfg.logger.tensorboard, save_dir=logdir)],
        [*run_callbacks(cfg, stopper), timer],
        max_steps=steps,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with stopper.handling():  # its handlers for the fit only, as charrnn-train has them
        trainer.fit(module, datamodule=dm)


def lightning_round(cfg: Any, dm: Any, steps: int, warmup: int, logdir: str, module_cls: type) -> float:
    """Steps/s of one fit of module_cls."""
    timer = StepTimes(warmup, steps)
    fit(cfg, dm, steps, logdir, module_cls, timer)
    return rate(timer.times, warmup)
