"""An interpolation from one rate to another: the piece schedules are built of."""

from __future__ import annotations

from kerastune_kit._args.validation import check_int, check_non_negative
from kerastune_kit.schedules import _pieces, _shapes
from kerastune_kit.schedules._base import PieceSchedule
from kerastune_kit.schedules._spec_names import register


@register
class Anneal(PieceSchedule):
    """Goes from ``start`` to ``end`` over ``steps`` with a shape, then stays at ``end``.

    ``lr(step) = shape(start, end, min(step / steps, 1))``, with ``shape`` one of:

    * ``"linear"``: ``start + (end - start) * f``;
    * ``"cosine"``: ``end + (start - end) * (1 + cos(pi * f)) / 2``;
    * ``"exponential"``: ``start * (end / start) ** f`` (geometric; ``start``
      and ``end`` must be ``> 0``);
    * ``"1-sqrt"``: ``end + (start - end) * (1 - sqrt(f))``.

    It goes up as well as down. Chained with :class:`Sequence` (each piece
    sees the steps since its own start) it builds any piecewise schedule;
    ``LinearDecay``, ``OneCycle`` and ``WarmupStableDecay`` are such chains.

    Args:
        start: the rate at step 0, ``>= 0``.
        end: the rate from ``steps`` on, ``>= 0``.
        steps: length of the interpolation, ``>= 1``.
        shape: ``"linear"`` (default), ``"cosine"``, ``"exponential"`` or
            ``"1-sqrt"``.

    Example:

    >>> from kerastune_kit.schedules import Anneal, Sequence
    >>> s = Anneal(1.0, 0.0, steps=100, shape="cosine")
    >>> [round(float(s(t)), 6) for t in (0, 50, 100, 150)]
    [1.0, 0.5, 0.0, 0.0]
    >>> up_down = Sequence([Anneal(0.1, 1.0, 10), Anneal(1.0, 0.0, 90, "cosine")], [10])
    >>> [round(float(up_down(t)), 6) for t in (0, 5, 10, 55, 100)]
    [0.1, 0.55, 1.0, 0.5, 0.0]
    """

    def __init__(self, start: float, end: float, steps: int, shape: str = "linear"):
        self.start = float(check_non_negative("start", start))
        self.end = float(check_non_negative("end", end))
        self.steps = check_int("steps", steps, minimum=1)
        self.shape = _shapes.check_shape("shape", shape, default="linear")
        if self.shape == "exponential":
            for name, value in (("start", self.start), ("end", self.end)):
                if value <= 0:
                    raise ValueError(
                        f"`{name}` must be > 0 with shape='exponential' (a geometric "
                        f"interpolation from or to 0 is undefined), got {value!r}.")
        self.total_steps = self.steps

    def _compose(self) -> _pieces.Piece:
        return _pieces.anneal(self.start, self.end, self.steps, self.shape)

    def get_config(self):
        return {"start": self.start, "end": self.end, "steps": self.steps,
                "shape": self.shape}
