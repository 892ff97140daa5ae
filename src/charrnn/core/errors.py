"""The one exception type for user mistakes, and the one way a value is checked against its range.

Console scripts catch :class:`UserError` and print its message as one sentence on stderr with
exit code 2; anything else is a bug and keeps its traceback. Constructors check their own
arguments with :func:`checked`, naming the config key, so a message says what to set.
"""

from __future__ import annotations

import math
from typing import Any


class UserError(ValueError):
    """Bad input from the user (config, corpus, checkpoint, prompt): the message says the fix."""


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    def show(x: float | None) -> str:
        return "" if x is None else str(x) if isinstance(x, int) else f"{x:g}"

    lo, hi = show(low), show(high)
    if high is None:
        return f"greater than {lo}" if low_open else f"at least {lo}"
    if low is None:
        return f"below {hi}" if high_open else f"at most {hi}"
    return f"in {'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"


def checked(
    key: str,
    value: Any,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """``value`` as an int (``integer``) or a finite float inside the bounds, else a :class:`UserError` naming
    ``key``.

    Strings that spell a number are accepted (a Hydra override may arrive as one); ``True`` and
    ``False`` are not numbers here; NaN and infinity are refused.
    """
    kind = "a whole number" if integer else "a number"
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if integer and (
            not math.isfinite(number)
            or number != int(number)
            or (isinstance(value, str) and not value.strip().lstrip("+-").isdigit())
        ):
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"{key} must be {kind}, got {value!r}; set {key}=<{kind}>") from None
    if not math.isfinite(number):
        raise UserError(f"{key} must be a finite number, got {value!r}; set {key}=<{kind}>")
    result = int(number) if integer else number
    too_low = low is not None and (result <= low if low_open else result < low)
    too_high = high is not None and (result >= high if high_open else result > high)
    if too_low or too_high:
        raise UserError(f"{key} must be {_bounds(low, high, low_open, high_open)}, got {value!r}")
    return result
