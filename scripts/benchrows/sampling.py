"""sampling: chars/s and time to first char of charrnn-sample's generator vs calling the model
(nn.LSTM) once per character."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from .common import Row, note

N_CHARS = 2000  # characters generated per measurement (the naive loop does a quarter of them)


def generator_run(model: Any, vocab: Any, prompt: str) -> tuple[float, float]:
    """(seconds to the first char, chars/s after it) of the project's generator."""
    from charrnn.core.generate import generate

    start = time.perf_counter()
    gen = generate(model, vocab, prompt, N_CHARS, temperature=1.0, seed=0)
    next(gen)
    first, t1 = time.perf_counter() - start, time.perf_counter()
    return first, sum(1 for _ in gen) / (time.perf_counter() - t1)


def naive_run(model: Any, vocab: Any, prompt: str) -> float:
    """Chars/s of the model's forward (one nn.LSTM call) for every character, with the same pick()."""
    import torch
    from torch.nn import functional as F

    from charrnn.core.generate import pick

    n = N_CHARS // 4
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        _, state = model(vocab.encode(prompt[:-1]).unsqueeze(0))
        idx, start = vocab.encode(prompt[-1]), time.perf_counter()
        for _ in range(n):
            logits, state = model(F.one_hot(idx.view(1, 1), len(vocab)).float(), state)
            idx = pick(logits[:, -1], 1.0, None, generator)
    return n / (time.perf_counter() - start)


def model_rows(model: Any, vocab: Any, prompt: str, hidden: int, threads: int, label: str) -> list[Row]:
    from charrnn.core.generate import SAMPLING_THREADS

    runs, naives = [], []
    for _ in range(3):  # interleaved: ours, naive, ours, naive, ...
        runs.append(generator_run(model, vocab, prompt))
        naives.append(naive_run(model, vocab, prompt))
    first = statistics.median(r[0] for r in runs)
    rate, base = statistics.median(r[1] for r in runs), statistics.median(naives)
    verdict = (
        f"target >= 3,000 {'ok' if rate >= 3000 else 'MISSED'}"
        if hidden == 512 and threads == SAMPLING_THREADS
        else ""
    )
    return [
        (
            "sampling",
            f"LSTM-{hidden}, {label}: chars/s generator vs naive",
            f"{rate:,.0f} vs {base:,.0f} ({rate / base:.1f}x)",
            verdict,
        ),
        (
            "sampling",
            f"LSTM-{hidden}, {label}: time to first char",
            f"{first * 1e3:.1f} ms",
            f"{len(prompt)}-char prompt, untrained model, V={len(vocab)}",
        ),
    ]


def run(args: argparse.Namespace) -> list[Row]:
    import torch

    from charrnn.core.corpora import read_text_file
    from charrnn.core.generate import SAMPLING_THREADS
    from charrnn.core.model import CharRNN
    from charrnn.core.vocab import Vocabulary

    text = read_text_file(args.corpus)
    vocab = Vocabulary.from_text(text)
    rows: list[Row] = []
    for threads in sorted({SAMPLING_THREADS, args.threads}):
        torch.set_num_threads(threads)
        label = f"{threads} thread(s)" + (", as charrnn-sample runs" if threads == SAMPLING_THREADS else "")
        for hidden in (256, 512):
            torch.manual_seed(0)
            model = CharRNN(len(vocab), hidden, cell="lstm").eval()
            note(f"sampling: LSTM-{hidden}, {threads} thread(s)")
            rows += model_rows(model, vocab, text[:200], hidden, threads, label)
    torch.set_num_threads(args.threads)
    return rows
