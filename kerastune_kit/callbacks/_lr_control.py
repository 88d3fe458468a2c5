"""How the kit's LR callbacks reach the optimizer.

The first kit callback that needs it installs a
:class:`~kerastune_kit.schedules.ControlledSchedule` as the optimizer's
learning rate (see :mod:`kerastune_kit._model_state.optimizer`): a plain float rate
becomes ``Constant(rate)``, a Keras schedule is wrapped as it is. From then
on every kit callback talks to that one object: the time-based callback sets
its schedule and what drives its position, curve-based control and the
divergence guard multiply its ``factor``. Keras's own LR callbacks keep
working next to them: a float they write sets the rate in effect by scaling
the kit's schedule.
"""

from __future__ import annotations

from kerastune_kit._model_state import optimizer as _optimizer
from kerastune_kit._model_state.optimizer import (
    controlled_schedule,
    current_learning_rate,
    has_controlled_schedule,
)

__all__ = ["controlled_schedule", "current_learning_rate", "has_controlled_schedule",
           "record_learning_rate", "scale_learning_rate", "write_controls"]


def write_controls(model, **values: float) -> None:
    """Writes the ControlledSchedule's factor/position/anchor_step/rate from the host.

    The compiled step reads them at every step on every backend (under JAX
    they travel in the optimizer's state), so no retrace is needed.
    """
    _optimizer.host_sync(model)
    controlled_schedule(model).set_controls(**values)


def scale_learning_rate(model, factor: float, min_lr: float = 0.0) -> tuple[float, float]:
    """Multiplies the LR by ``factor`` (never below ``min_lr``).

    Returns ``(old_lr, new_lr)``. The cut goes into the schedule's
    ``factor``, so a time-based schedule keeps its shape.
    """
    controlled = controlled_schedule(model)
    old_lr = current_learning_rate(model)
    new_lr = max(old_lr * factor, min_lr)
    old_factor = controlled.controls()["factor"]
    if old_lr > 0:
        write_controls(model, factor=old_factor * new_lr / old_lr)
    return old_lr, current_learning_rate(model)


def record_learning_rate(model, logs) -> None:
    """Writes the LR in effect into the epoch logs unless already there."""
    if logs is not None and "learning_rate" not in logs:
        logs["learning_rate"] = current_learning_rate(model)
