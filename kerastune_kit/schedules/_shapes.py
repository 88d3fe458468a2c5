"""Pure interpolation shapes: ``shape(start, end, fraction) -> value``.

``fraction`` is a tensor clipped to [0, 1]; ``start`` and ``end`` are floats
(or, for a warmup, the wrapped schedule's first value). :data:`SHAPES` is the
one list of shape names: every schedule that takes a shape checks it with
:func:`check_shape`.
"""

from __future__ import annotations

import math
from typing import Any

from keras import ops

from kerastune_kit._args.validation import check_choice

SHAPES = ("linear", "cosine", "exponential", "1-sqrt")


def position(step):
    """The step as a float32 tensor (works on ints, floats and tensors)."""
    return ops.cast(step, "float32")


def fraction(step, length):
    """``step / length`` clipped to [0, 1]."""
    return ops.clip(position(step) / float(length), 0.0, 1.0)


def linear(start, end, frac):
    return start + (end - start) * frac


def cosine(start, end, frac):
    return end + (start - end) * 0.5 * (1.0 + ops.cos(math.pi * frac))


def exponential(start, end, frac):
    # Geometric interpolation; start and end must be > 0 (checked by callers).
    return start * ops.power(end / start, frac)


def one_minus_sqrt(start, end, frac):
    return end + (start - end) * (1.0 - ops.sqrt(frac))


_BY_NAME = {
    "linear": linear,
    "cosine": cosine,
    "exponential": exponential,
    "1-sqrt": one_minus_sqrt,
}


def interpolate(shape: str, start, end, frac):
    """Interpolates from ``start`` to ``end`` with the named shape."""
    return _BY_NAME[shape](start, end, frac)


def check_shape(name: str, value: Any, *, default: str,
                excluded: tuple[str, ...] = ()) -> str:
    """Checks that ``value`` is one of :data:`SHAPES` but ``excluded``.

    The error message lists ``default`` first, then the others in the order
    of :data:`SHAPES`.
    """
    accepted = (default, *(s for s in SHAPES if s != default and s not in excluded))
    return check_choice(name, value, accepted)
