"""Argument checks shared by the whole kit.

Every check raises ``ValueError`` naming the argument, the value received and
what is accepted, so a typo fails at construction instead of hours later.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(name: str, value: Any, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 high_open: bool = False) -> float:
    """Checks that ``value`` is a finite number inside the given interval."""
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(
            f"`{name}` must be in {left}{lo}, {hi}{right}, got {value!r}."
        )
    return value


def check_non_negative(name: str, value: Any) -> float:
    return check_number(name, value, low=0.0)


def check_positive(name: str, value: Any) -> float:
    return check_number(name, value, low=0.0, low_open=True)


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    """Checks that ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Checks that ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {accepted}; got {value!r}.")
    return value


def check_increasing(name: str, values: Iterable[Any]) -> list:
    """Checks a strictly increasing sequence of positive integers."""
    values = list(values)
    for v in values:
        check_int(name, v, minimum=1)
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(
            f"`{name}` must be strictly increasing, got {values!r}."
        )
    return [int(v) for v in values]


def check_bool(name: str, value: Any) -> bool:
    """Checks that ``value`` is True or False (NumPy booleans included)."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)
