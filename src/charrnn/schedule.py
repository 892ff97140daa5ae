"""Learning-rate schedules, as factories the module calls with the optimizer and the step count."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from charrnn.errors import UserError


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1) -> LambdaLR:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` times the base lr.

    ``min_lr_ratio=1`` is a constant rate after warmup (the ``scheduler=constant`` option).
    """
    if int(warmup_steps) < 0 or not 0.0 <= float(min_lr_ratio) <= 1.0:
        raise UserError(f"scheduler needs warmup_steps >= 0 and min_lr_ratio in [0, 1], got {warmup_steps} and {min_lr_ratio}")
    if not math.isfinite(total_steps):
        raise UserError("the learning-rate schedule needs a known length: set trainer.max_steps or trainer.max_epochs")
    total_steps, warmup_steps = int(total_steps), int(warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
