"""flops: achieved FLOP/s of LSTM training (forward + backward + Adam) vs this machine's float32
matmul peak (2048^3), through CharRNN (one-hot) and a bare nn.LSTM (dense inputs)."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

from .common import Row, detach, interleaved, note

BATCH, SEQ = 32, 64
TARGETS = {256: 0.75, 512: 0.85}  # fraction of the matmul peak CharRNN should reach, by hidden size


def matmul_peak() -> float:
    """FLOP/s of the best of five 2048^3 float32 matmuls."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    c = torch.empty(2048, 2048)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        torch.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best


def train_step(
    params: list[Any], forward: Callable[[Any, Any], Any], x: Any, y: Any, vocab_size: int
) -> Callable[[], None]:
    """One Adam step of forward(x, carried state) against targets y, the state carried and detached."""
    import torch
    from torch.nn import functional as F

    opt, carry = torch.optim.Adam(params, lr=1e-3), [None]

    def step() -> None:
        logits, carry[0] = forward(x, detach(carry[0]))
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def seconds_per_step(hidden: int, vocab_size: int) -> dict[str, float]:
    """CharRNN on one-hot indices vs a bare nn.LSTM + Linear on dense inputs, timed interleaved."""
    import torch
    from torch import nn

    from charrnn.core.model import CharRNN

    tokens = torch.randint(0, vocab_size, (BATCH, SEQ + 1))
    x_idx, y = tokens[:, :-1], tokens[:, 1:].reshape(-1)
    x_dense = torch.randn(BATCH, SEQ, vocab_size)
    project = CharRNN(vocab_size, hidden, cell="lstm").train()
    bare_lstm, bare_head = nn.LSTM(vocab_size, hidden, batch_first=True), nn.Linear(hidden, vocab_size)

    def project_forward(x: Any, h: Any) -> Any:
        # The project's path: CharRNN takes the batch's indices and one-hot encodes them itself.
        return project(x, h)

    def bare_forward(x: Any, h: Any) -> Any:
        out, h = bare_lstm(x, h)
        return bare_head(out), h

    return interleaved(
        {
            "CharRNN (one-hot)": train_step(
                list(project.parameters()), project_forward, x_idx, y, vocab_size
            ),
            "bare nn.LSTM (dense)": train_step(
                [*bare_lstm.parameters(), *bare_head.parameters()], bare_forward, x_dense, y, vocab_size
            ),
        }
    )


def run(args: argparse.Namespace) -> list[Row]:
    from charrnn.core.corpora import read_text_file
    from charrnn.core.vocab import Vocabulary

    vocab_size = len(Vocabulary.from_text(read_text_file(args.corpus)))
    peak = matmul_peak()
    rows: list[Row] = [
        (
            "flops",
            f"float32 matmul peak, {args.threads} threads",
            f"{peak / 1e9:.1f} GFLOP/s",
            "2048^3 torch.matmul, best of 5",
        )
    ]
    for hidden in (128, 256, 512):
        # Matmul FLOPs per character: LSTM forward 2*4H(I+H), backward about twice that; head 2*H*V, x3.
        per_char = 3 * 2 * 4 * hidden * (vocab_size + hidden) + 3 * 2 * hidden * vocab_size
        note(f"flops: LSTM-{hidden}")
        results = {
            name: per_char * BATCH * SEQ / sec for name, sec in seconds_per_step(hidden, vocab_size).items()
        }
        ours, bare = results["CharRNN (one-hot)"], results["bare nn.LSTM (dense)"]
        target = TARGETS.get(hidden)
        verdict = (
            f"target >= {target:.0%} {'ok' if ours / peak >= target else 'MISSED'}" if target else "no target"
        )
        rows.append(
            (
                "flops",
                f"LSTM-{hidden} {BATCH}x{SEQ} train step, % of peak",
                f"CharRNN {ours / peak:.0%} ({ours / 1e9:.1f} GFLOP/s), bare nn.LSTM {bare / peak:.0%} "
                f"({bare / 1e9:.1f})",
                f"{verdict}; {per_char / 1e6:.2f} MFLOP/char, V={vocab_size}",
            )
        )
    return rows
