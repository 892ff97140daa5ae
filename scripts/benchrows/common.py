"""Helpers shared by the benchmark rows: progress notes, the project's composed config, timing."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "scripts" / "bench.py"  # the entry point (the memory row runs it again as a child)

Row = tuple[str, str, str, str]  # (row, measure, value, target / anchor / note)


def note(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def compose(overrides: list[str]) -> Any:
    """The project's own composed config (conf/train.yaml + overrides), as charrnn-train sees it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import charrnn.cli.rundir  # noqa: F401  (registers the run-dir resolvers)

    with initialize_config_module(config_module="charrnn.conf", version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def detach(h: Any) -> Any:
    """The module's own truncation of a carried state (imported late: it pulls in Lightning)."""
    from charrnn.lit.module import detach_hidden

    return detach_hidden(h)


def last_line(text: str) -> str:
    """The last line of a failed subprocess's stderr, short enough for a table cell."""
    return (text.strip().splitlines() or ["?"])[-1][:100]


def interleaved(
    steps: dict[str, Callable[[], None]], rounds: int = 3, min_seconds: float = 1.0, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each step, timed in alternating rounds (a, b, a, b, ...) so load changes hit
    all alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            n, start = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - start < min_seconds:
                step()
                n += 1
            times[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(t) for name, t in times.items()}
