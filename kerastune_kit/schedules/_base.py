"""The base class of the kit's schedules, and how schedules are read and written."""

from __future__ import annotations

import keras

from kerastune_kit.schedules._pieces import Piece
from kerastune_kit.schedules.lookup import get


class KitSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A Keras ``LearningRateSchedule`` that knows its length.

    ``total_steps`` is the number of steps the schedule is designed to run
    (``None`` when it is open-ended). Time-based training uses it to map a
    fraction of a wall-clock budget onto the schedule.
    """

    total_steps: int | None = None

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class PieceSchedule(KitSchedule):
    """A kit schedule whose maths is a composition of pure pieces (:mod:`._pieces`).

    Subclasses check their arguments in the constructor and say in
    :meth:`_compose` which pieces they are made of. The pieces are composed
    at each call (once per trace in a compiled step), from the attributes as
    they are then.
    """

    def _compose(self) -> Piece:
        raise NotImplementedError

    def __call__(self, step):
        return self._compose()(step)


def schedule_length(schedule) -> int | None:
    """The number of steps a schedule is designed to run, or ``None``.

    The kit's schedules report ``total_steps``. For Keras's own schedules the
    length is their decay horizon: ``decay_steps`` for ExponentialDecay,
    InverseTimeDecay and PolynomialDecay, ``warmup_steps + decay_steps`` for
    CosineDecay, ``first_decay_steps`` for CosineDecayRestarts and the last
    boundary for PiecewiseConstantDecay. Anything else gives ``None``.
    """
    if isinstance(schedule, KitSchedule):
        return schedule.total_steps
    s = keras.optimizers.schedules
    if isinstance(schedule, s.CosineDecay):
        return int(schedule.decay_steps + (schedule.warmup_steps or 0))
    if isinstance(schedule, s.CosineDecayRestarts):
        return int(schedule.first_decay_steps)
    if isinstance(schedule, s.PiecewiseConstantDecay):
        return int(schedule.boundaries[-1])
    if isinstance(schedule, (s.ExponentialDecay, s.InverseTimeDecay,
                             s.PolynomialDecay)):
        return int(schedule.decay_steps)
    return None


def as_schedule(identifier, *, name: str = "schedule"):
    """Turns a schedule, a number, a spec string or a config into a schedule."""
    if isinstance(identifier, keras.optimizers.schedules.LearningRateSchedule):
        return identifier
    try:
        return get(identifier)
    except ValueError as err:
        raise ValueError(f"`{name}`: {err}") from None


def serialize_schedule(schedule) -> dict:
    return keras.saving.serialize_keras_object(schedule)


def deserialize_schedule(config):
    if isinstance(config, dict):
        return keras.saving.deserialize_keras_object(config)
    return as_schedule(config)
