"""Pure step-to-rate pieces, and the join that chains them.

A piece is a function ``step -> rate`` built from ``keras.ops`` alone, so it
runs inside the compiled step of any backend. The kit's schedule classes wrap
pieces (for serialization and argument checks), and its named schedules are
compositions of them, as optax builds its named schedules from
``join_schedules`` and interpolation pieces. Lengths and boundaries may be
fractional here (``OneCycle`` turns at ``pct_start * total_steps``); the
public classes check their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from keras import ops

from kerastune_kit.schedules import _shapes

Piece = Callable[..., object]


def constant(value: float) -> Piece:
    """``value`` at every step."""
    return lambda step: ops.cast(ops.full((), value), "float32")


def anneal(start, end, steps: float, shape: str) -> Piece:
    """From ``start`` at step 0 to ``end`` at ``steps`` with ``shape``, then ``end``."""
    return lambda step: _shapes.interpolate(shape, start, end, _shapes.fraction(step, steps))


def join(pieces: Sequence[Piece], boundaries: Sequence[float]) -> Piece:
    """``pieces[i]`` from ``boundaries[i-1]`` on, evaluated at the steps since then.

    ``boundaries`` are increasing, one fewer than ``pieces``.
    """
    first, rest = pieces[0], list(zip(boundaries, pieces[1:]))

    def piece(step):
        pos = _shapes.position(step)
        out = ops.cast(first(pos), "float32")
        for start, later in rest:
            value = ops.cast(later(ops.maximum(pos - start, 0.0)), "float32")
            out = ops.where(pos >= start, value, out)
        return out

    return piece


def warmup(schedule: Piece, steps: float, start: float, shape: str) -> Piece:
    """From ``start`` up to ``schedule(0)`` over ``steps`` with ``shape``, then
    ``schedule`` from its own step 0."""

    def ramp(step):
        return anneal(start, ops.cast(schedule(0), "float32"), steps, shape)(step)

    return join([ramp, schedule], [steps])
