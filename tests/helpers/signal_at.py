"""A Lightning callback that sends a signal to its own process at a chosen moment, for stop tests.

A signal sent from outside lands wherever the process happens to be; this one lands exactly where a
test asks, and still travels through the kernel to the real handler. Used as a config callback of
a real ``charrnn-train`` process (``PYTHONPATH=tests/helpers``)::

    +callbacks.kill._target_=signal_at.SignalAt +callbacks.kill.hook=test_batch +callbacks.kill.signum=15

``rank=N`` (train_batch only): under DDP only rank N sends it. ``hook=init`` sends it while Hydra
builds the callback (before training, inside ``instantiate``); with ``masked=true`` the constructor then
fails in its cleanup, as OmegaConf's ``flag_override`` does when the stop lands while it builds a list:
its own error replaces the stop the signal handler raised.
"""

from __future__ import annotations

import os
import time
from typing import Any

from lightning.pytorch.callbacks import Callback


class SignalAt(Callback):
    def __init__(
        self, hook: str, signum: int, step: int = 0, masked: bool = False, rank: int | None = None
    ) -> None:
        self.hook, self.signum, self.step, self.sent = hook, int(signum), int(step), False
        self.rank = None if rank is None else int(rank)  # under DDP: that rank alone sends it
        if not masked:
            self._maybe("init", 0)
            return
        try:
            self._maybe("init", 0)
            time.sleep(10)  # the handler raises its stop in here
        finally:
            raise RuntimeError("a cleanup that fails on the half-built state the stop left")

    def _maybe(self, hook: str, step: int) -> None:
        if hook == self.hook and step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_test_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._maybe("test_batch", batch_idx)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.rank is None or trainer.global_rank == self.rank:
            self._maybe("train_batch", trainer.global_step)
