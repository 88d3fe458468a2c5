"""Linear decay to an end rate."""

from __future__ import annotations

from kerastune_kit._args.validation import check_int, check_non_negative
from kerastune_kit.schedules import _pieces
from kerastune_kit.schedules._base import PieceSchedule
from kerastune_kit.schedules._spec_names import register


@register
class LinearDecay(PieceSchedule):
    """Decays linearly from ``initial_learning_rate`` to ``end_learning_rate``.

    ``lr(step) = initial + (end - initial) * min(step / decay_steps, 1)``,
    i.e. ``Anneal(initial, end, decay_steps, "linear")``.

    Args:
        initial_learning_rate: the rate at step 0, ``>= 0``.
        decay_steps: steps to reach ``end_learning_rate``, ``>= 1``.
        end_learning_rate: the rate from ``decay_steps`` on. Defaults to 0.

    Example:

    >>> from kerastune_kit.schedules import LinearDecay
    >>> round(float(LinearDecay(1.0, 100)(25)), 6)
    0.75
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int,
                 end_learning_rate: float = 0.0):
        self.initial_learning_rate = float(
            check_non_negative("initial_learning_rate", initial_learning_rate))
        self.decay_steps = check_int("decay_steps", decay_steps, minimum=1)
        self.end_learning_rate = float(
            check_non_negative("end_learning_rate", end_learning_rate))
        self.total_steps = self.decay_steps

    def _compose(self) -> _pieces.Piece:
        return _pieces.anneal(self.initial_learning_rate, self.end_learning_rate,
                              self.decay_steps, "linear")

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
        }
