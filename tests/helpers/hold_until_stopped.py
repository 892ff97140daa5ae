"""A callback that holds chosen sweep jobs at a step until their own stop handler has received a signal.

At ``step`` of each job in ``jobs`` it writes its process id to ``<dir>/held_<num>`` and waits until the run's
:class:`~charrnn.lit.stop.StopOnSignal` (one of the trainer's callbacks) has received a signal, then
lets the step end, where the stop saves ``last.ckpt``. So a test can signal a sweep while it knows
which jobs are mid-run, and none can finish meanwhile. A job that waits over a minute fails loudly.
Training is untouched: a held job's results equal an unheld one's. Used as a config callback of a
real ``charrnn-train`` (``PYTHONPATH=tests/helpers``)::

    +callbacks.hold._target_=hold_until_stopped.HoldUntilStopped +callbacks.hold.jobs=[0,1] ...
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback

from charrnn.lit.stop import StopOnSignal

LONGEST_HOLD_S = 60.0


class HoldUntilStopped(Callback):
    def __init__(self, jobs: Any, step: int, dir: str) -> None:
        self.jobs, self.step, self.dir = {int(j) for j in jobs}, int(step), Path(dir)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        num = HydraConfig.get().job.num
        held = self.dir / f"held_{num}"
        if num not in self.jobs or trainer.global_step != self.step or held.exists():
            return
        (stopper,) = [c for c in trainer.callbacks if isinstance(c, StopOnSignal)]
        held.write_text(str(os.getpid()))
        deadline = time.monotonic() + LONGEST_HOLD_S
        while stopper.received is None:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"sweep job {num} held {LONGEST_HOLD_S:.0f} s at step {self.step} and no signal came"
                )
            time.sleep(0.02)
