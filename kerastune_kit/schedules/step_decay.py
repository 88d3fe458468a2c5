"""Multiply the rate by a factor every N steps."""

from __future__ import annotations

from keras import ops

from kerastune_kit._args.validation import check_int, check_non_negative, check_number
from kerastune_kit.schedules import _shapes
from kerastune_kit.schedules._base import KitSchedule
from kerastune_kit.schedules._spec_names import register


@register
class StepDecay(KitSchedule):
    """Multiplies the rate by ``factor`` every ``step_size`` steps.

    ``lr(step) = initial_learning_rate * factor ** floor(step / step_size)``.

    Args:
        initial_learning_rate: the rate at step 0, ``>= 0``.
        step_size: steps between two multiplications, ``>= 1``.
        factor: the multiplier, in (0, 1]. Defaults to 0.1.
        total_steps: length used when the schedule is driven by a wall-clock
            budget; ``None`` (default) for open-ended.

    Example:

    >>> from kerastune_kit.schedules import StepDecay
    >>> round(float(StepDecay(1.0, step_size=10, factor=0.5)(25)), 6)
    0.25
    """

    def __init__(self, initial_learning_rate: float, step_size: int,
                 factor: float = 0.1, total_steps: int | None = None):
        self.initial_learning_rate = float(
            check_non_negative("initial_learning_rate", initial_learning_rate))
        self.step_size = check_int("step_size", step_size, minimum=1)
        self.factor = float(check_number("factor", factor, low=0.0, low_open=True, high=1.0))
        self.total_steps = None if total_steps is None else check_int(
            "total_steps", total_steps, minimum=1)

    def __call__(self, step):
        cuts = ops.floor(_shapes.position(step) / float(self.step_size))
        return self.initial_learning_rate * ops.power(self.factor, cuts)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "step_size": self.step_size,
            "factor": self.factor,
            "total_steps": self.total_steps,
        }
