"""A callback that holds chosen sweep jobs at a step until the test lets them go, once per job.

At ``step`` of each job in ``jobs`` it touches ``<dir>/held_<num>`` and sleeps until ``<dir>/go_<num>``
exists; a job whose ``held_<num>`` is already there (a resumed attempt) trains on. Training is untouched:
a held job's results equal an unheld one's. Used as a config callback of a real ``charrnn-train``
(``PYTHONPATH=tests/helpers``): ``+callbacks.hold._target_=hold_at.HoldAt +callbacks.hold.jobs=[1,2] ...``
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback


class HoldAt(Callback):
    def __init__(self, jobs: Any, step: int, dir: str) -> None:
        self.jobs, self.step, self.dir = {int(j) for j in jobs}, int(step), Path(dir)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        num = HydraConfig.get().job.num
        held = self.dir / f"held_{num}"
        if num not in self.jobs or trainer.global_step < self.step or held.exists():
            return
        held.touch()
        while not (self.dir / f"go_{num}").exists():
            time.sleep(0.2)
