"""Any schedule multiplied by a number."""

from __future__ import annotations

import keras
from keras import ops

from kerastune_kit._args.validation import check_non_negative
from kerastune_kit.schedules._base import (
    KitSchedule,
    as_schedule,
    deserialize_schedule,
    schedule_length,
    serialize_schedule,
)


@keras.saving.register_keras_serializable(package="kerastune_kit")
class Scaled(KitSchedule):
    """``scale * schedule(step)``: any schedule, Keras's included, scaled.

    :class:`~kerastune_kit.callbacks.TimeBasedLR` with ``relative=True``
    builds one: a schedule written as fractions of a peak (``1.0`` at its
    top) times the optimizer's own rate, e.g. the one a tuner chose.

    Args:
        schedule: any ``LearningRateSchedule``, a number, or a spec accepted
            by :func:`kerastune_kit.schedules.get`.
        scale: the multiplier, ``>= 0``.

    Example:

    >>> from kerastune_kit.schedules import LinearDecay, Scaled
    >>> s = Scaled(LinearDecay(1.0, decay_steps=100), 0.01)
    >>> round(float(s(0)), 6), round(float(s(50)), 6), s.total_steps
    (0.01, 0.005, 100)
    """

    def __init__(self, schedule, scale: float):
        self.schedule = as_schedule(schedule)
        self.scale = float(check_non_negative("scale", scale))
        self.total_steps = schedule_length(self.schedule)

    def __call__(self, step):
        return ops.cast(self.schedule(step), "float32") * self.scale

    def get_config(self):
        return {"schedule": serialize_schedule(self.schedule), "scale": self.scale}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = deserialize_schedule(config["schedule"])
        return cls(**config)
