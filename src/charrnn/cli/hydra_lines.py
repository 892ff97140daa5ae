"""What Hydra prints, made into charrnn-train's one-line messages."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


def hydra_error_line(error: BaseException) -> str:
    """Hydra's multi-line config error (and its OmegaConf cause) as one line, without search-path hints."""
    text = str(error) + (f"\n{error.__cause__}" if error.__cause__ is not None else "")
    kept: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("Config search path", "provider=", "full_key:", "object_type=")):
            continue
        if raw.startswith("\t") and kept and kept[-1].startswith("Available options"):
            kept[-1] += (" " if kept[-1].endswith(":") else ", ") + line
        else:
            kept.append(line)
    return " ".join(kept)


class WithoutJobErrorLine:
    """A stderr that drops the line Hydra writes as a sweeper takes a failed job's result
    (``JobReturn.return_value``: ``Error executing job with overrides: [...]``, one write of its own):
    charrnn-train's line for the failed job names it, its dir and its error. Everything else passes."""

    HYDRA_LINE = "Error executing job with overrides: "

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if text.startswith(self.HYDRA_LINE):
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def without_job_error_line() -> Iterator[None]:
    """``sys.stderr`` without Hydra's failed-job line for the ``with`` block."""
    stream = sys.stderr
    sys.stderr = WithoutJobErrorLine(stream)
    try:
        yield
    finally:
        sys.stderr = stream
