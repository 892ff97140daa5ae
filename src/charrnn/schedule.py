"""Learning-rate schedules, as factories the module calls with the optimizer and the step count."""

from __future__ import annotations

import math
import time

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from charrnn.errors import UserError


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: float,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.1,
    max_seconds: float | None = None,
) -> LambdaLR:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` times the base lr.

    ``min_lr_ratio=1`` is a constant rate after warmup (the ``scheduler=constant`` option). With
    ``max_seconds`` (a wall-time budget, e.g. ``trainer.max_time``) the decay follows whichever
    runs out first, steps or time, so a time-limited run still ends at the floor; that makes the
    rate depend on the machine's speed, so leave it unset where runs must repeat exactly.
    """
    if int(warmup_steps) < 0 or not 0.0 <= float(min_lr_ratio) <= 1.0:
        raise UserError(f"scheduler needs warmup_steps >= 0 and min_lr_ratio in [0, 1], got {warmup_steps} and {min_lr_ratio}")
    if not math.isfinite(total_steps) and not max_seconds and min_lr_ratio < 1.0:
        raise UserError("the learning-rate schedule needs a known length: set trainer.max_steps, trainer.max_epochs or scheduler.max_seconds")
    warmup_steps = int(warmup_steps)
    started: list[float] = []

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps) if math.isfinite(total_steps) else 0.0
        if max_seconds:
            if not started:
                started.append(time.monotonic())
            progress = max(progress, (time.monotonic() - started[0]) / float(max_seconds))
        progress = min(1.0, progress)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
