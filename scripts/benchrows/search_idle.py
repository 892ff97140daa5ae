"""Slot idle time of a parallel search, from its trials' run.json spans: measured, and what a batch
barrier (launch n_jobs trials, wait for all of them, launch the next n_jobs) would have had."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Span:
    """One trial: its number (= launch order), run.json status, and when it ran (epoch seconds)."""

    number: int
    status: str
    start: float
    end: float
    steps: int

    @property
    def seconds(self) -> float:
        return self.end - self.start


def precise_span(started: str, ended: str, wall_seconds: float) -> tuple[float, float]:
    """(start, end) in epoch seconds from run.json: ``started``/``ended`` are ISO times cut to the whole
    second, ``wall_seconds`` the span to the millisecond. The true start lies in [started, started + 1)
    and in (ended - wall, ended + 1 - wall]: the middle of both, within half a second or better."""
    s, e = datetime.fromisoformat(started).timestamp(), datetime.fromisoformat(ended).timestamp()
    lo, hi = max(s, e - wall_seconds), min(s + 1.0, e + 1.0 - wall_seconds)
    start = (lo + hi) / 2 if lo <= hi else s  # inconsistent records (clock change): trust `started`
    return start, start + wall_seconds


def barrier_idle(durations: list[float], n_jobs: int) -> tuple[float, float, float]:
    """The old behaviour on these trial lengths (in launch order): batches of ``n_jobs``, each waiting for
    its longest: idle = sum over batches of (longest - each). A last, partial batch counts its own trials
    only. Returns (idle slot seconds, slot seconds, the barrier's wall seconds)."""
    idle = slot = wall = 0.0
    for i in range(0, len(durations), n_jobs):
        batch = durations[i : i + n_jobs]
        longest = max(batch)
        idle += sum(longest - d for d in batch)
        slot += len(batch) * longest
        wall += longest
    return idle, slot, wall


def barrier_trials_within(durations: list[float], n_jobs: int, seconds: float) -> int:
    """Trials a batch barrier would have finished within ``seconds`` on these trial lengths."""
    done, clock = 0, 0.0
    for i in range(0, len(durations), n_jobs):
        batch = durations[i : i + n_jobs]
        clock += max(batch)
        if clock > seconds:
            break
        done += len(batch)
    return done


def measured_idle(spans: list[Span], n_jobs: int, window: tuple[float, float]) -> tuple[float, float]:
    """Slot seconds with no trial running in ``window`` (first trial start to the deadline), and the
    slot seconds there (n_jobs x window): the integral of max(0, n_jobs - trials running)."""
    begin, finish = window
    if finish <= begin:
        return 0.0, 0.0
    events: list[tuple[float, int]] = []
    for span in spans:
        start, end = max(span.start, begin), min(span.end, finish)
        if end > start:
            events += [(start, 1), (end, -1)]
    events.sort()
    idle, running, clock = 0.0, 0, begin
    for when, change in events:
        idle += max(0, n_jobs - running) * (when - clock)
        running, clock = running + change, when
    idle += max(0, n_jobs - running) * (finish - clock)
    return idle, n_jobs * (finish - begin)
