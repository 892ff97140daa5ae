"""Learning-rate schedules: a factory built from ``conf/scheduler/`` that the module calls with the optimizer.

:class:`WarmupCosine` checks its settings when Hydra builds it, before any work; the module then
calls it with the optimizer and the run's total steps. The per-step factor is a plain object, so
``LambdaLR.state_dict`` saves its fields into every checkpoint: a resumed run continues the same
curve, including the seconds already spent against ``max_seconds``.
"""

from __future__ import annotations

import math
import secrets
import time

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from charrnn.core.errors import UserError, checked

# Which process a saved clock reading came from: a reading from an earlier process (a checkpoint
# of a killed run) is not comparable with this process's monotonic clock.
_PROCESS = secrets.token_hex(8)


class CosineFactor:
    """The multiplier of the base lr at a step: warmup, then cosine to ``min_lr_ratio`` (by steps or
    seconds)."""

    def __init__(
        self, warmup_steps: int, total_steps: float, min_lr_ratio: float, max_seconds: float | None
    ) -> None:
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.min_lr_ratio, self.max_seconds = min_lr_ratio, max_seconds
        self.seconds = 0.0  # spent so far against max_seconds, across resumes
        self.clock: list = []  # [process, monotonic time] of the last call

    def _tick(self) -> float:
        now = time.monotonic()
        if self.clock and self.clock[0] == _PROCESS:
            self.seconds += now - self.clock[1]
        self.clock = [_PROCESS, now]
        return self.seconds

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        done = self.total_steps - self.warmup_steps
        progress = (step - self.warmup_steps) / max(1.0, done) if math.isfinite(self.total_steps) else 0.0
        if self.max_seconds:
            progress = max(progress, self._tick() / self.max_seconds)
        progress = min(1.0, progress)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` times the base lr.

    ``min_lr_ratio=1`` is a constant rate after warmup (the ``scheduler=constant`` option). With
    ``max_seconds`` (a wall-time budget, e.g. ``trainer.max_time``) the decay follows whichever
    runs out first, steps or time, so a time-limited run still ends at the floor; that makes the
    rate depend on the machine's speed, so leave it unset where runs must repeat exactly.
    """

    def __init__(
        self, warmup_steps: int = 0, min_lr_ratio: float = 0.1, max_seconds: float | None = None
    ) -> None:
        self.warmup_steps = checked("scheduler.warmup_steps", warmup_steps, integer=True, low=0)
        self.min_lr_ratio = checked("scheduler.min_lr_ratio", min_lr_ratio, low=0.0, high=1.0)
        self.max_seconds = (
            None
            if max_seconds is None
            else checked("scheduler.max_seconds", max_seconds, low=0.0, low_open=True)
        )

    def __call__(self, optimizer: Optimizer, total_steps: float) -> LambdaLR:
        if not math.isfinite(total_steps) and not self.max_seconds and self.min_lr_ratio < 1.0:
            raise UserError(
                "the learning-rate schedule needs a known length: set trainer.max_steps, trainer.max_epochs "
                "or scheduler.max_seconds"
            )
        return LambdaLR(
            optimizer, CosineFactor(self.warmup_steps, total_steps, self.min_lr_ratio, self.max_seconds)
        )
