"""A callback that SIGKILLs the whole sweep (its process group: the sweep process and its workers) at a
chosen step of one job, once: it leaves a marker file, so the resumed sweep trains on undisturbed."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback


class KillSweepAt(Callback):
    def __init__(self, job: int, step: int, marker: str) -> None:
        self.job, self.step, self.marker = int(job), int(step), Path(marker)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if (
            HydraConfig.get().job.num == self.job
            and trainer.global_step >= self.step
            and not self.marker.exists()
        ):
            self.marker.touch()
            os.killpg(os.getpgid(0), signal.SIGKILL)
