"""Warmup, a long stable phase, then a short decay (WSD)."""

from __future__ import annotations

import keras
from keras import ops

from kerastune_kit._validation import check_choice, check_int, check_non_negative
from kerastune_kit.schedules import _shapes
from kerastune_kit.schedules._base import KitSchedule


@keras.saving.register_keras_serializable(package="kerastune_kit")
class WarmupStableDecay(KitSchedule):
    """Warmup-stable-decay: the schedule of many recent large training runs.

    Three phases over ``total_steps``: a linear warmup from
    ``initial_learning_rate`` to ``peak_learning_rate`` over ``warmup_steps``;
    the peak held; and a decay to ``final_learning_rate`` over the last
    ``decay_steps`` with the chosen shape.

    Args:
        peak_learning_rate: the stable rate, ``>= 0``.
        total_steps: length of the run, ``>= 1``.
        warmup_steps: steps of warmup, ``>= 0``. Defaults to 0.
        decay_steps: steps of the final decay, ``>= 0``; ``None`` (default)
            takes 20% of ``total_steps``.
        initial_learning_rate: the rate at step 0. Defaults to 0.
        final_learning_rate: the rate at the end. Defaults to 0.
        decay_shape: ``"linear"`` (default), ``"cosine"`` or ``"1-sqrt"``.

    Example:

    >>> from kerastune_kit.schedules import WarmupStableDecay
    >>> s = WarmupStableDecay(1.0, total_steps=100, warmup_steps=10, decay_steps=20)
    >>> [round(float(s(t)), 6) for t in (5, 50, 90, 100)]
    [0.5, 1.0, 0.5, 0.0]
    """

    def __init__(self, peak_learning_rate: float, total_steps: int,
                 warmup_steps: int = 0, decay_steps: int | None = None,
                 initial_learning_rate: float = 0.0,
                 final_learning_rate: float = 0.0, decay_shape: str = "linear"):
        self.peak_learning_rate = float(
            check_non_negative("peak_learning_rate", peak_learning_rate))
        self.total_steps = check_int("total_steps", total_steps, minimum=1)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        if decay_steps is None:
            decay_steps = int(round(0.2 * self.total_steps))
        self.decay_steps = check_int("decay_steps", decay_steps, minimum=0)
        if self.warmup_steps + self.decay_steps > self.total_steps:
            raise ValueError(
                f"`warmup_steps` + `decay_steps` must be <= `total_steps`; got "
                f"warmup_steps={self.warmup_steps}, decay_steps={self.decay_steps}, "
                f"total_steps={self.total_steps}."
            )
        self.initial_learning_rate = float(
            check_non_negative("initial_learning_rate", initial_learning_rate))
        self.final_learning_rate = float(
            check_non_negative("final_learning_rate", final_learning_rate))
        self.decay_shape = check_choice("decay_shape", decay_shape,
                                        ("linear", "cosine", "1-sqrt"))

    def __call__(self, step):
        pos = _shapes.position(step)
        peak = self.peak_learning_rate
        warm = _shapes.linear(self.initial_learning_rate, peak,
                              _shapes.fraction(pos, max(self.warmup_steps, 1)))
        decay_start = self.total_steps - self.decay_steps
        decay = _shapes.interpolate(
            self.decay_shape, peak, self.final_learning_rate,
            _shapes.fraction(pos - decay_start, max(self.decay_steps, 1)))
        stable = ops.full_like(pos, peak)
        out = ops.where(pos < self.warmup_steps, warm, stable)
        return ops.where(pos >= decay_start, decay, out)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "initial_learning_rate": self.initial_learning_rate,
            "final_learning_rate": self.final_learning_rate,
            "decay_shape": self.decay_shape,
        }
