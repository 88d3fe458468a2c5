"""The schedule the kit's LR callbacks install on an optimizer."""

from __future__ import annotations

import keras
from keras import ops

from kerastune_kit._validation import check_choice
from kerastune_kit.schedules._base import (
    KitSchedule,
    deserialize_schedule,
    schedule_length,
    serialize_schedule,
)

UNITS = ("step", "epoch", "second")


@keras.saving.register_keras_serializable(package="kerastune_kit")
class ControlledSchedule(KitSchedule):
    """``lr = schedule(position) * factor``, with host-controlled parts.

    This is the hook through which the kit's callbacks compose: the
    time-based callback chooses ``schedule`` and what drives its position,
    and curve-based control multiplies ``factor``, so a cut scales the
    schedule instead of fighting it. Both ``factor`` and (for the epoch and
    second units) ``position`` are variables: changing them needs no
    retracing of the train function.

    With ``unit="step"`` the position is the optimizer's own step counter,
    read inside the compiled step, so the rate changes at EVERY step even
    inside ``steps_per_execution``. With ``"epoch"`` or ``"second"`` the
    callback writes the position from the host.

    Args:
        schedule: the wrapped schedule.
        unit: ``"step"`` (default), ``"epoch"`` or ``"second"``.
        factor: initial multiplier. Defaults to 1.
        position: initial host-side position. Defaults to 0.

    Example:

    >>> from kerastune_kit.schedules import ControlledSchedule, LinearDecay
    >>> s = ControlledSchedule(LinearDecay(1.0, 100))
    >>> s.factor.assign(0.5)
    >>> round(float(s(50)), 6)
    0.25
    """

    def __init__(self, schedule, unit: str = "step", factor: float = 1.0,
                 position: float = 0.0):
        self.schedule = schedule
        self.unit = check_choice("unit", unit, UNITS)
        self.factor = keras.Variable(float(factor), dtype="float32",
                                     trainable=False, name="lr_factor")
        self.position = keras.Variable(float(position), dtype="float32",
                                       trainable=False, name="lr_position")

    @property
    def total_steps(self):
        return schedule_length(self.schedule)

    def __call__(self, step):
        pos = step if self.unit == "step" else self.position
        return ops.cast(self.schedule(pos), "float32") * self.factor

    def get_config(self):
        return {
            "schedule": serialize_schedule(self.schedule),
            "unit": self.unit,
            "factor": float(ops.convert_to_numpy(self.factor)),
            "position": float(ops.convert_to_numpy(self.position)),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = deserialize_schedule(config["schedule"])
        return cls(**config)
