"""The schedule the kit's LR callbacks install on an optimizer."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from kerastune_kit._args.validation import check_choice, check_number, show
from kerastune_kit._keras.scalars import host_float
from kerastune_kit.schedules._base import (
    KitSchedule,
    deserialize_schedule,
    schedule_length,
    serialize_schedule,
)
from kerastune_kit.schedules._spec_names import register

UNITS = ("step", "epoch", "second")


@register
class ControlledSchedule(KitSchedule):
    """``lr = schedule(position) * factor``, with host-controlled parts.

    The schedule the kit's LR callbacks install on an optimizer:
    ``TimeBasedLR`` chooses ``schedule`` and what drives its position,
    ``CurveBasedLR`` and ``DivergenceGuard`` multiply ``factor``, so a cut
    scales the schedule instead of fighting it. The position is computed in
    the compiled step from the optimizer's step counter: ``step`` for
    ``unit="step"``; ``position + rate * (step - anchor_step)`` for
    ``"epoch"`` and ``"second"`` (clipped to ``[0, length]`` for
    ``"second"``). The four controls are variables, so writing them
    (``set_controls``) needs no retrace; ``host_value`` and ``rates_at``
    compute the same rates on the host. See ``docs/schedules.md``.

    Args:
        schedule: the wrapped schedule, a ``LearningRateSchedule``.
        unit: ``"step"`` (default), ``"epoch"`` or ``"second"``.
        factor: initial multiplier, ``>= 0``. Defaults to 1.
        position: the position at ``anchor_step``, a finite number. Defaults
            to 0.
        anchor_step: the step at which the position is ``position``, ``>= 0``.
            Defaults to 0.
        rate: positions per step after ``anchor_step``, ``>= 0``. Defaults
            to 0.

    Example:

    >>> from kerastune_kit.schedules import ControlledSchedule, LinearDecay
    >>> s = ControlledSchedule(LinearDecay(1.0, 100))
    >>> s.set_factor(0.5)
    >>> round(float(s(50)), 6)
    0.25
    >>> s = ControlledSchedule(LinearDecay(1.0, 100), unit="second", rate=2.0)
    >>> round(float(s(10)), 6), s.position_at(10), round(s.host_value(10), 6)
    (0.8, 20.0, 0.8)
    """

    def __init__(self, schedule, unit: str = "step", factor: float = 1.0,
                 position: float = 0.0, anchor_step: float = 0.0, rate: float = 0.0):
        if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError(
                f"`schedule` must be a keras.optimizers.schedules.LearningRateSchedule, "
                f"got {show(schedule)}.")
        self.schedule = schedule
        self.unit = check_choice("unit", unit, UNITS)
        check_number("factor", factor, low=0.0)
        check_number("position", position)
        check_number("anchor_step", anchor_step, low=0.0)
        check_number("rate", rate, low=0.0)
        self.factor = _variable(factor, "lr_factor")
        self.position = _variable(position, "lr_position")
        self.anchor_step = _variable(anchor_step, "lr_anchor_step")
        self.rate = _variable(rate, "lr_rate")

    @property
    def total_steps(self):
        return schedule_length(self.schedule)

    @property
    def variables(self) -> list:
        """The host-controlled variables: factor, position, anchor_step, rate."""
        return [self.factor, self.position, self.anchor_step, self.rate]

    def __call__(self, step):
        position = _position(self.unit, step, self.position, self.anchor_step, self.rate,
                             self.total_steps)
        return ops.cast(self.schedule(position), "float32") * self.factor

    # Host side ----------------------------------------------------------------

    def controls(self) -> dict[str, float]:
        """The host-controlled values as plain floats."""
        return {name: _read(getattr(self, name))
                for name in ("factor", "position", "anchor_step", "rate")}

    def set_controls(self, **values: float) -> None:
        """Writes any of ``factor``, ``position``, ``anchor_step``, ``rate``."""
        unknown = set(values) - {"factor", "position", "anchor_step", "rate"}
        if unknown:
            raise ValueError(
                f"ControlledSchedule.set_controls got unknown names {sorted(unknown)}.")
        for name, value in values.items():
            variable = getattr(self, name)
            if _read(variable) != float(value):
                variable.assign(float(value))

    def set_factor(self, value: float) -> None:
        """Writes ``factor``, the multiplier of the schedule."""
        self.set_controls(factor=value)

    def position_at(self, step) -> float:
        """The position at ``step``, computed on the host like the graph does."""
        return float(self.positions_at(np.asarray([step]))[0])

    def positions_at(self, steps, controls: dict | None = None) -> np.ndarray:
        """Positions at ``steps`` (optimizer steps), with the current controls
        or with ``controls`` as :meth:`controls` returned them earlier."""
        steps = np.asarray(steps)
        if self.unit == "step":
            return steps.astype("float64")
        c = controls or self.controls()
        # The graph's formula on host values: the same float32 arithmetic.
        return np.asarray(ops.convert_to_numpy(_position(
            self.unit, steps.astype("float32"), c["position"], c["anchor_step"], c["rate"],
            self.total_steps)))

    def rates_at(self, steps, controls: dict | None = None) -> np.ndarray:
        """The learning rates at ``steps`` (optimizer steps), on the host."""
        c = controls or self.controls()
        return rates_on_host(self.schedule, self.positions_at(steps, c)) * np.float32(
            c["factor"])

    def host_value(self, step, controls: dict | None = None) -> float:
        """The learning rate at ``step`` (an optimizer step), computed on the host
        as the compiled step computes it; with the current controls or
        ``controls`` as :meth:`controls` returned them earlier."""
        return float(self.rates_at(np.asarray([step]), controls)[0])

    def set_rate(self, value: float, step) -> None:
        """Makes the learning rate at ``step`` equal ``value`` by setting ``factor``.

        This is what a float written to the optimizer's ``learning_rate``
        means once the kit controls it (Keras's ``ReduceLROnPlateau`` and
        ``LearningRateScheduler`` do that): the rate in effect becomes
        ``value`` and the schedule keeps its shape from there, scaled.
        """
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"A learning rate must be a finite number >= 0, got {value!r}.")
        base = self.host_value(step, {**self.controls(), "factor": 1.0})
        if base <= 0:
            if value == 0:
                self.set_factor(0.0)
                return
            raise ValueError(
                f"Cannot set the learning rate to {value:g}: kerastune_kit controls this "
                f"optimizer's rate (schedule x factor) and its schedule "
                f"{type(self.schedule).__name__} is 0 at step {int(step)}, so no factor "
                "gives that rate. A float written to optimizer.learning_rate (for example by "
                "keras.callbacks.LearningRateScheduler) scales the kit's schedule; use "
                "kerastune_kit.callbacks.TimeBasedLR for the schedule and CurveBasedLR "
                "(rule='plateau') for cuts instead.")
        self.set_factor(value / base)

    def get_config(self):
        config = {"schedule": serialize_schedule(self.schedule), "unit": self.unit}
        config.update(self.controls())
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = deserialize_schedule(config["schedule"])
        return cls(**config)


def _position(unit: str, step, position, anchor_step, rate, length):
    """The wrapped schedule's position at ``step``: the one formula, run in the
    compiled step on the variables and on the host on their values."""
    if unit == "step":
        return step
    pos = position + rate * (ops.cast(step, "float32") - anchor_step)
    if unit == "second":
        pos = ops.maximum(pos, 0.0)
        if length is not None:
            pos = ops.minimum(pos, float(length))
    return pos


def rates_on_host(schedule, positions) -> np.ndarray:
    """``schedule`` at each of ``positions``, as float32 NumPy values."""
    positions = np.asarray(positions)
    try:  # Most schedules are elementwise maths and take all positions at once.
        values = np.asarray(ops.convert_to_numpy(schedule(positions)), "float32")
        return np.broadcast_to(values, positions.shape)
    except Exception:  # noqa: BLE001 - e.g. a schedule with a scalar `cond`.
        return np.array([ops.convert_to_numpy(schedule(p)) for p in positions.tolist()],
                        "float32").reshape(positions.shape)


def _variable(value, name):
    return keras.Variable(float(value), dtype="float32", trainable=False, name=name)


def _read(variable) -> float:
    return host_float(variable)
