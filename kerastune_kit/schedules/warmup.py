"""Warmup in front of any schedule."""

from __future__ import annotations

from kerastune_kit._args.validation import check_int, check_non_negative
from kerastune_kit.schedules import _pieces, _shapes
from kerastune_kit.schedules._base import (
    PieceSchedule,
    as_schedule,
    deserialize_schedule,
    schedule_length,
    serialize_schedule,
)
from kerastune_kit.schedules._spec_names import register


@register
class Warmup(PieceSchedule):
    """Ramps from ``initial_learning_rate`` up to any schedule's first value.

    For ``step < warmup_steps`` the rate goes from ``initial_learning_rate`` to
    ``schedule(0)`` with the chosen shape; from then on the wrapped schedule
    runs from its OWN step 0, i.e. ``lr(step) = schedule(step - warmup_steps)``.
    Works around Keras's schedules as well as the kit's.

    Args:
        schedule: any ``LearningRateSchedule``, a number, or a spec accepted by
            :func:`kerastune_kit.schedules.get`.
        warmup_steps: length of the warmup, ``>= 1``.
        initial_learning_rate: the rate at step 0. Defaults to 0.
        shape: ``"linear"`` (default), ``"cosine"`` or ``"exponential"``
            (geometric; needs ``initial_learning_rate > 0``).

    Example:

    >>> from kerastune_kit.schedules import Warmup, LinearDecay
    >>> s = Warmup(LinearDecay(1.0, 100), warmup_steps=10)
    >>> round(float(s(5)), 6), round(float(s(10)), 6), round(float(s(60)), 6)
    (0.5, 1.0, 0.5)
    """

    def __init__(self, schedule, warmup_steps: int,
                 initial_learning_rate: float = 0.0, shape: str = "linear"):
        self.schedule = as_schedule(schedule)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=1)
        self.initial_learning_rate = float(
            check_non_negative("initial_learning_rate", initial_learning_rate))
        self.shape = _shapes.check_shape("shape", shape, default="linear",
                                         excluded=("1-sqrt",))
        if shape == "exponential" and self.initial_learning_rate <= 0:
            raise ValueError(
                "`initial_learning_rate` must be > 0 with shape='exponential' "
                f"(geometric warmup from 0 is undefined), got {initial_learning_rate!r}."
            )
        inner = schedule_length(self.schedule)
        self.total_steps = None if inner is None else self.warmup_steps + inner

    def _compose(self) -> _pieces.Piece:
        return _pieces.warmup(self.schedule, self.warmup_steps, self.initial_learning_rate,
                              self.shape)

    def get_config(self):
        return {
            "schedule": serialize_schedule(self.schedule),
            "warmup_steps": self.warmup_steps,
            "initial_learning_rate": self.initial_learning_rate,
            "shape": self.shape,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = deserialize_schedule(config["schedule"])
        return cls(**config)
