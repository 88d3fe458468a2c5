"""A constant learning rate."""

from __future__ import annotations

from kerastune_kit._args.validation import check_int, check_non_negative
from kerastune_kit.schedules import _pieces
from kerastune_kit.schedules._base import PieceSchedule
from kerastune_kit.schedules._spec_names import register


@register
class Constant(PieceSchedule):
    """The same learning rate at every step.

    Args:
        learning_rate: the rate, ``>= 0``.
        total_steps: length used when the schedule is driven by a wall-clock
            budget; ``None`` (default) for open-ended.

    Example:

    >>> from kerastune_kit.schedules import Constant
    >>> round(float(Constant(0.1)(1000)), 6)
    0.1
    """

    def __init__(self, learning_rate: float, total_steps: int | None = None):
        self.learning_rate = float(check_non_negative("learning_rate", learning_rate))
        self.total_steps = None if total_steps is None else check_int(
            "total_steps", total_steps, minimum=1)

    def _compose(self) -> _pieces.Piece:
        return _pieces.constant(self.learning_rate)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps}
