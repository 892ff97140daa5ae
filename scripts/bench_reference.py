#!/usr/bin/env python
"""Time one training step of the numpy reference RNN against the PyTorch CharRNN, side by side.

A step is forward + mean cross-entropy + full backpropagation through time + a plain SGD update
(no clipping, zero initial hidden state, integer inputs), the same work for every column:
  numpy f64   charrnn.core.reference: forward, backward, SGD.step
  torch f32   CharRNN (one-layer tanh nn.RNN + linear head), torch.optim.SGD, float32
  torch f64   the same model and optimiser in float64 (the precision the reference uses)
Two sizes: the notebook's (vocab 4, hidden 8, seq 4, batch 1) and a realistic one (vocab 65,
hidden 128, seq 64, batch 32). Each cell is the median over --repeats timed runs of as many
steps as fill --min-time seconds, the three columns' runs interleaved; ratios above 1 mean torch
is faster than numpy. numpy's BLAS and torch are both limited to --threads threads (set before
either library is imported). On a busy machine, more threads than free cores can make every
column far slower (threads spin waiting for each other): compare with --threads 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

SETUPS = {  # name: (vocab, hidden, seq, batch)
    "notebook": (4, 8, 4, 1),
    "medium": (65, 128, 64, 32),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and numpy's BLAS")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per cell; the median is shown")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds each timed run lasts at least")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (the same for all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and the weights")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.min_time <= 0:
        parser.error("--threads and --repeats must be >= 1 and --min-time > 0")
    return args


def calibrate(step: Callable[[], None], min_time: float) -> int:
    """Warm ``step`` up, then the number of calls (a power of two) that lasts ``min_time``."""
    for _ in range(3):  # warm-up: allocator, lazy initialisation, caches
        step()
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            step()
        if time.perf_counter() - start >= min_time:
            return n
        n *= 2


def per_step(steps: list[Callable[[], None]], repeats: int, min_time: float) -> list[float]:
    """Median seconds per call of each step function.

    The runs are interleaved (a, b, c, a, b, c, ...) so that any change in the machine's load
    during the benchmark hits every column alike and the ratios stay fair.
    """
    counts = [calibrate(step, min_time) for step in steps]
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, n, out in zip(steps, counts, times):
            start = time.perf_counter()
            for _ in range(n):
                step()
            out.append((time.perf_counter() - start) / n)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # read once, when the BLAS library loads

    import numpy as np
    import torch

    try:
        from charrnn.core import reference as ref
        from charrnn.core.model import CharRNN
    except ImportError:  # running from a checkout without the package installed
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from charrnn.core import reference as ref
        from charrnn.core.model import CharRNN

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)

    def numpy_step(params: ref.Params, x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
        opt = ref.SGD(params, lr=args.lr)

        def step() -> None:
            grads, _ = ref.backward(params, ref.forward(params, x, y))
            opt.step(params, grads)

        return step

    def torch_step(
        params: ref.Params, x: np.ndarray, y: np.ndarray, dtype: torch.dtype
    ) -> Callable[[], None]:
        model = CharRNN.from_reference(params).to(dtype)
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)
        xt, yt = torch.as_tensor(x), torch.as_tensor(y).reshape(-1)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            logits, _ = model(xt)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt)
            loss.backward()
            opt.step()

        return step

    print(
        f"one training step (forward + BPTT + SGD update), median of {args.repeats}; "
        f"{args.threads} thread(s); numpy {np.__version__}, torch {torch.__version__}"
    )
    header = ("setup", "V/H/T/B", "numpy f64", "torch f32", "torch f64", "numpy/torch32", "numpy/torch64")
    rows = []
    for name, (vocab, hidden, seq, batch) in SETUPS.items():
        params = ref.init_params(vocab, hidden, rng, scale=0.1)
        x = rng.integers(0, vocab, (batch, seq))
        y = rng.integers(0, vocab, (batch, seq))
        steps = [
            numpy_step({k: v.copy() for k, v in params.items()}, x, y),
            torch_step(params, x, y, torch.float32),
            torch_step(params, x, y, torch.float64),
        ]
        t_np, t32, t64 = per_step(steps, args.repeats, args.min_time)
        rows.append(
            (
                name,
                f"{vocab}/{hidden}/{seq}/{batch}",
                f"{t_np * 1e3:.3f} ms",
                f"{t32 * 1e3:.3f} ms",
                f"{t64 * 1e3:.3f} ms",
                f"{t_np / t32:.3g}x",
                f"{t_np / t64:.3g}x",
            )
        )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print("numpy/torch = numpy's time / torch's time per step: above 1, torch is faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
