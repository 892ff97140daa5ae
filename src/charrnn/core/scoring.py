"""Loss, bits per char, perplexity and accuracy of a CharRNN over a whole token sequence.

The computation is the one ``CharRNNModule`` validates with, so a number printed by
``charrnn-eval`` and a ``val/bpc`` logged during training are the same quantity: the sequence is
cut into ``batch_size`` parallel streams read in consecutive windows of ``seq_len``
(:class:`~charrnn.core.windows.StreamWindows`), the hidden state starts from zero and is carried from
window to window, every target is scored exactly once, and the sums are kept in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from charrnn.core.errors import UserError
from charrnn.core.model import CharRNN
from charrnn.core.windows import IGNORE_INDEX, StreamWindows

LN2 = math.log(2.0)
STANDARD_TRAIN_FRACTION = 0.9  # the standard split (nanoGPT's shakespeare_char): val is the last 10 %


def standard_val(tokens: Tensor) -> Tensor:
    """The standard split's val: the last 10 % of a corpus, cut exactly as nanoGPT cuts it
    (``data[int(n * 0.9):]``), so a loss on it compares with published figures."""
    return tokens[int(len(tokens) * STANDARD_TRAIN_FRACTION) :]


def standard_val_held_out(fractions: Sequence[float]) -> bool:
    """Whether a run cut with ``data.split=fractions`` left the standard val out of its training: its
    train fraction is at most 0.9 (rounding may put one boundary character into both)."""
    return fractions[0] / sum(fractions) <= STANDARD_TRAIN_FRACTION + 1e-9


def batch_sums(logits: Tensor, targets: Tensor) -> Tensor:
    """``[loss sum, correct, count]`` of one batch in float64, padded targets (IGNORE_INDEX) skipped."""
    flat_logits, flat_targets = logits.reshape(-1, logits.size(-1)), targets.reshape(-1)
    mask = flat_targets != IGNORE_INDEX
    loss_sum = F.cross_entropy(flat_logits.float(), flat_targets, ignore_index=IGNORE_INDEX, reduction="sum")
    correct = ((flat_logits.argmax(-1) == flat_targets) & mask).sum()
    return torch.stack([loss_sum.double(), correct.double(), mask.sum().double()])


def metrics_from_sums(sums: Tensor) -> dict[str, float]:
    """``loss`` (nats/char), ``bpc``, ``perplexity``, ``acc`` and ``chars`` from accumulated
    :func:`batch_sums`."""
    count = sums[2].clamp(min=1)
    loss = (sums[0] / count).item()
    return {
        "loss": loss,
        "bpc": loss / LN2,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "acc": (sums[1] / count).item(),
        "chars": int(sums[2].item()),
    }


def evaluate(model: CharRNN, tokens: Tensor, batch_size: int, seq_len: int) -> dict[str, float]:
    """Whole-sequence metrics of ``model`` predicting ``tokens[1:]`` from ``tokens[:-1]``, statefully.

    The model reads the token indices, as in training (it encodes them itself: :class:`CharRNN`).
    ``batch_size`` and ``seq_len`` are whole numbers of at least 1 (``charrnn-eval`` checks them as it
    parses them: :func:`charrnn.core.windows.check_windows`). Returns ``loss`` (nats/char), ``bpc``,
    ``perplexity``, ``acc`` and ``chars`` (targets scored).
    """
    if len(tokens) < 2:
        raise UserError(f"evaluation needs at least 2 characters (one input, one target), got {len(tokens)}")
    batch_size, seq_len = int(batch_size), int(seq_len)
    device = model.head.weight.device
    windows = StreamWindows(tokens.long().cpu(), batch_size, seq_len)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            state = None
            for k in range(len(windows)):
                inputs, targets = (t.to(device) for t in windows[k])
                logits, state = model(inputs, state)
                sums += batch_sums(logits, targets)
    finally:
        model.train(was_training)
    return metrics_from_sums(sums)
