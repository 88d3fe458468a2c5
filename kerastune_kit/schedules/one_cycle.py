"""The one-cycle policy (Smith & Topin, 2018)."""

from __future__ import annotations

from kerastune_kit._args.validation import check_int, check_number, check_positive
from kerastune_kit.schedules import _pieces, _shapes
from kerastune_kit.schedules._base import PieceSchedule
from kerastune_kit.schedules._spec_names import register


@register
class OneCycle(PieceSchedule):
    """Up from ``max/div_factor`` to ``max``, then down to a tiny final rate.

    With ``peak = pct_start * total_steps``, ``start = max_learning_rate /
    div_factor`` and ``end = start / final_div_factor``::

        step <  peak: anneal(start, max, step / peak)
        step >= peak: anneal(max, end, (step - peak) / (total_steps - peak))

    That is two :class:`Anneal` pieces joined at ``peak`` as :class:`Sequence`
    joins them (the peak may fall between two steps).

    Args:
        max_learning_rate: the peak rate, ``> 0``.
        total_steps: length of the cycle, ``>= 2``.
        pct_start: fraction of the cycle spent going up, in (0, 1). Defaults
            to 0.3.
        div_factor: ``max / start``, ``> 0``. Defaults to 25.
        final_div_factor: ``start / end``, ``> 0``. Defaults to 1e4.
        anneal: ``"cosine"`` (default) or ``"linear"``.

    Example:

    >>> from kerastune_kit.schedules import OneCycle
    >>> s = OneCycle(1.0, total_steps=100, pct_start=0.25)
    >>> round(float(s(0)), 6), round(float(s(25)), 6)
    (0.04, 1.0)
    """

    def __init__(self, max_learning_rate: float, total_steps: int,
                 pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, anneal: str = "cosine"):
        self.max_learning_rate = float(check_positive("max_learning_rate", max_learning_rate))
        self.total_steps = check_int("total_steps", total_steps, minimum=2)
        self.pct_start = float(check_number("pct_start", pct_start, low=0.0, high=1.0,
                                            low_open=True, high_open=True))
        self.div_factor = float(check_positive("div_factor", div_factor))
        self.final_div_factor = float(check_positive("final_div_factor", final_div_factor))
        self.anneal = _shapes.check_shape("anneal", anneal, default="cosine",
                                          excluded=("exponential", "1-sqrt"))

    def _compose(self) -> _pieces.Piece:
        peak = self.pct_start * self.total_steps
        start = self.max_learning_rate / self.div_factor
        end = start / self.final_div_factor
        return _pieces.join(
            [_pieces.anneal(start, self.max_learning_rate, peak, self.anneal),
             _pieces.anneal(self.max_learning_rate, end, self.total_steps - peak, self.anneal)],
            [peak])

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal": self.anneal,
        }
