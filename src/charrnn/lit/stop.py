"""Stopping on SIGTERM or SIGINT at a step boundary, with a checkpoint: every stop is saved and honest.

Clusters preempt with SIGTERM, users press Ctrl-C. :class:`StopOnSignal` turns either into: finish
the current optimizer step, write ``last.ckpt`` (atomically, as every checkpoint), and raise
:class:`Stopped`, which ``charrnn-train`` reports in one line and exits 128 + the signal number
(143 for SIGTERM, 130 for SIGINT). A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import lightning as L
from lightning.pytorch.callbacks import Callback

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """Training stopped by a signal after saving ``checkpoint``; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        self.signal_name, self.step, self.checkpoint = signal.Signals(signum).name, step, checkpoint
        self.exit_code = 128 + int(signum)
        super().__init__(f"stopped by {self.signal_name} at step {step}")


class StopOnSignal(Callback):
    """Handle SIGTERM and SIGINT for a whole run: ``with stopper.handling(): ...`` around it.

    A signal that comes before training is under way stops it at its first step. Lightning installs
    its own SIGTERM handler when fit starts (it would end fit with exit code 0), so the handler is
    installed again as training starts.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.received = signum

    def _install(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._handle) for sig in SIGNALS}

    @contextlib.contextmanager
    def handling(self) -> Iterator["StopOnSignal"]:
        previous = self._install()
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        received = self.received
        if trainer.world_size > 1:  # every rank stops at the same step, whichever rank got the signal
            received = signal.SIGTERM if trainer.strategy.reduce_boolean_decision(received is not None, all=False) else None
        if received is None:
            return
        dirpath = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else None
        path = str(Path(dirpath or trainer.default_root_dir) / "last.ckpt")
        trainer.save_checkpoint(path)
        raise Stopped(received, trainer.global_step, path)
