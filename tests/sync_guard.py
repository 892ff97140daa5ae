"""A callback for tests/test_gpu.py: CUDA's sync debug mode set to "error" over a window of training steps.

Added to a real ``charrnn-train`` run through Hydra (``+callbacks.sync_guard._target_=sync_guard.SyncGuard``,
with ``tests/`` on PYTHONPATH). The window opens at the start of step ``first`` and closes at the start of
step ``last + 1``, so it covers whole steps: the batch's forward, backward and optimizer step and every
``on_train_batch_end`` hook (the project's stop checks and NaN flag). It writes ``sync_guard.json`` into the
run directory: the steps it guarded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch


class SyncGuard(L.Callback):
    def __init__(self, first: int = 3, last: int = 12) -> None:
        self.first, self.last = first, last
        self.guarded: list[int] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self.first:
            torch.cuda.set_sync_debug_mode("error")
        if step == self.last + 1:
            torch.cuda.set_sync_debug_mode("default")
        if self.first <= step <= self.last:
            self.guarded.append(step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.cuda.set_sync_debug_mode("default")
        Path(trainer.default_root_dir, "sync_guard.json").write_text(
            json.dumps({"guarded_steps": self.guarded})
        )


class SyncProbe(L.Callback):
    """A deliberate host sync (``.item()`` on a CUDA tensor) at the end of step ``at``: the guard must fail
    the run."""

    def __init__(self, at: int = 5) -> None:
        self.at = at

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.at:
            pl_module.model.head.weight.sum().item()
