"""The one-cycle policy (Smith & Topin, 2018)."""

from __future__ import annotations

import keras
from keras import ops

from kerastune_kit._validation import check_choice, check_int, check_number, check_positive
from kerastune_kit.schedules import _shapes
from kerastune_kit.schedules._base import KitSchedule


@keras.saving.register_keras_serializable(package="kerastune_kit")
class OneCycle(KitSchedule):
    """Up from ``max/div_factor`` to ``max``, then down to a tiny final rate.

    With ``peak = pct_start * total_steps``, ``start = max_learning_rate /
    div_factor`` and ``end = start / final_div_factor``::

        step <  peak: anneal(start, max, step / peak)
        step >= peak: anneal(max, end, (step - peak) / (total_steps - peak))

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
        self.anneal = check_choice("anneal", anneal, ("cosine", "linear"))

    def __call__(self, step):
        pos = _shapes.position(step)
        peak = self.pct_start * self.total_steps
        start = self.max_learning_rate / self.div_factor
        end = start / self.final_div_factor
        up = _shapes.interpolate(self.anneal, start, self.max_learning_rate,
                                 ops.clip(pos / peak, 0.0, 1.0))
        down = _shapes.interpolate(
            self.anneal, self.max_learning_rate, end,
            ops.clip((pos - peak) / (self.total_steps - peak), 0.0, 1.0))
        return ops.where(pos < peak, up, down)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal": self.anneal,
        }
