"""Checking numbers a user passes (a flag, a TOML key, a Python argument) before any work starts:
the wrong type, NaN/inf or a value out of range is a one-line DBDError naming the setting and
what it accepts, never a traceback (or a segfault in a native library) minutes later."""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import DBDError

MAX_THREADS = 256  # --threads / threads=: beyond any machine's cores; native thread pools crash far above it


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"from {minimum} to {maximum}"
    if minimum is not None:
        return f"at least {minimum}"
    return f"at most {maximum}"


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int: a whole number (not a bool, str or float) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DBDError(f"{name} must be a whole number, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise DBDError(f"{name} must be a whole number {_bounds(minimum, maximum)}, got {value}")
    return value


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above_minimum: bool = False,
) -> float:
    """`value` as a float: a finite real number (NaN passes every `<`/`>` check, so it is refused
    first) within [minimum, maximum]; `above_minimum`: minimum itself is refused too."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DBDError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise DBDError(f"{name} must be a finite number, got {value}")
    low = minimum is not None and (value <= minimum if above_minimum else value < minimum)
    if low or (maximum is not None and value > maximum):
        what = f"above {minimum}" + (f" and at most {maximum}" if maximum is not None else "")
        raise DBDError(f"{name} must be {what if above_minimum else _bounds(minimum, maximum)}, got {value:g}")
    return value
