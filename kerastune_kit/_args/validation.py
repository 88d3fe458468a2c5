"""Argument checks shared by the whole kit.

Every check raises ``ValueError`` naming the argument, the value received and
what is accepted, so a typo fails at construction instead of hours later.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

MAX_NUMBER = 1e30  # largest magnitude a numeric argument may have
MAX_INT = 2**63    # integer arguments must be below this (they may become int64)


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (an int too long to print is described)."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        return f"an int of {value.bit_length()} bits"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_number(value: Any) -> bool:
    """A real number (NumPy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_float(value: Any) -> float | None:
    """``float(value)`` for a finite real number of magnitude <= MAX_NUMBER, else None."""
    if not _is_number(value):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) and abs(number) <= MAX_NUMBER else None


def check_number(name: str, value: Any, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 high_open: bool = False) -> float:
    """Checks that ``value`` is a finite real number inside the given interval.

    Accepts ints, floats and NumPy scalars of magnitude up to 1e30; rejects
    bools, None, strings, nan, inf and anything else. Returns a float.
    """
    number = _as_float(value)
    if number is None:
        raise ValueError(
            f"`{name}` must be a finite number of magnitude <= {MAX_NUMBER:g}, "
            f"got {show(value)}.")
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(
            f"`{name}` must be in {left}{lo}, {hi}{right}, got {show(value)}."
        )
    return number


def check_optional_number(name: str, value: Any, **bounds: Any) -> float | None:
    """``None``, or :func:`check_number` of ``value``."""
    return None if value is None else check_number(name, value, **bounds)


def check_non_negative(name: str, value: Any) -> float:
    return check_number(name, value, low=0.0)


def check_positive(name: str, value: Any) -> float:
    return check_number(name, value, low=0.0, low_open=True)


def check_callbacks(callbacks) -> list:
    """``callbacks`` as a list of ``keras.callbacks.Callback`` (None: ``[]``; one
    callback: a list of it); anything else is a ``ValueError`` naming it."""
    import keras

    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.Callback):
        callbacks = [callbacks]
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Iterable):
        raise ValueError(f"`callbacks` must be a list of keras.callbacks.Callback objects, "
                         f"got {show(callbacks)}.")
    callbacks = list(callbacks)
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.Callback):
            raise ValueError(
                f"`callbacks` must be keras.callbacks.Callback objects; got {callback!r}.")
    return callbacks


def check_verbose(value: Any) -> int:
    """Checks a callback's ``verbose``: an integer >= 0, or a bool (``True`` is 1), as in Keras."""
    if isinstance(value, bool):
        return int(value)
    return check_int("verbose", value, minimum=0)


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    """Checks that ``value`` is an integer ``>= minimum`` and below 2**63.

    Accepts ints, NumPy integers and integral floats (``3.0``); rejects
    bools, None, strings and anything else. Returns an int.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    else:
        real = _as_float(value)
        number = int(real) if real is not None and real.is_integer() else None
    if number is None or number < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {show(value)}.")
    if number >= MAX_INT:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum} and < 2**63, got {show(value)}.")
    return number


def check_optional_int(name: str, value: Any, *, minimum: int = 0) -> int | None:
    """``None``, or :func:`check_int` of ``value``."""
    return None if value is None else check_int(name, value, minimum=minimum)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Checks that ``value`` is one of ``choices`` (a bool never stands for 0 or 1)."""
    choices = tuple(choices)
    for choice in choices:
        try:
            same = bool(choice == value) and isinstance(value, bool) == isinstance(choice, bool)
        except (TypeError, ValueError):  # e.g. an array, whose == is elementwise
            same = False
        if same:
            return choice
    accepted = ", ".join(repr(c) for c in choices)
    raise ValueError(f"`{name}` must be one of {accepted}; got {show(value)}.")


def check_increasing(name: str, values: Iterable[Any]) -> list:
    """Checks a strictly increasing sequence of positive integers."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(
            f"`{name}` must be a list of strictly increasing integers >= 1, got {show(values)}.")
    values = [check_int(name, v, minimum=1) for v in values]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(
            f"`{name}` must be strictly increasing, got {show(values)}."
        )
    return values


def check_bool(name: str, value: Any) -> bool:
    """Checks that ``value`` is True or False (NumPy booleans included)."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not isinstance(value, bool) and not numpy_bool:
        raise ValueError(f"`{name}` must be True or False, got {show(value)}.")
    return bool(value)


def check_callable(name: str, value: Any, what: str = "a function") -> Any:
    """Checks that ``value`` is callable; ``what`` says what it should be."""
    if not callable(value):
        raise ValueError(f"`{name}` must be {what}, got {show(value)}.")
    return value
