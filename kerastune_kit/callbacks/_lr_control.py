"""How the kit's LR callbacks reach the optimizer.

The first kit callback that needs it installs a
:class:`~kerastune_kit.schedules.ControlledSchedule` as the optimizer's
learning rate: a plain float rate becomes ``Constant(rate)``, a Keras
schedule is wrapped as it is. From then on every kit callback talks to that
one object: the time-based callback sets its schedule and unit, curve-based
control and the divergence guard multiply its ``factor``. Keras's "learning
rate is not settable" error cannot occur, because nothing ever assigns a
float to an optimizer that has a schedule.
"""

from __future__ import annotations

import keras
from keras import ops

from kerastune_kit.schedules import Constant, ControlledSchedule


def base_optimizer(optimizer):
    """The optimizer that owns the learning rate (unwraps loss scaling)."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def controlled_schedule(model) -> ControlledSchedule:
    """Returns the model optimizer's ControlledSchedule, installing it once."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            "The kit's learning-rate callbacks need a compiled model with an "
            "optimizer; call model.compile(optimizer=...) first."
        )
    optimizer = base_optimizer(optimizer)
    # Keras keeps the rate (variable or schedule) in `_learning_rate`; its
    # public getter would evaluate a schedule instead of returning it.
    current = optimizer._learning_rate
    if isinstance(current, ControlledSchedule):
        return current
    if isinstance(current, keras.optimizers.schedules.LearningRateSchedule):
        base = current
    elif callable(current) and not isinstance(current, keras.Variable):
        raise ValueError(
            "The optimizer's learning_rate is a plain callable; the kit's LR "
            "callbacks need a float or a keras LearningRateSchedule."
        )
    else:
        # `.numpy()` first: NumPy warns on __array__ of a mirrored variable.
        value = current.numpy() if isinstance(current, keras.Variable) else current
        base = Constant(float(ops.convert_to_numpy(value)))
    controlled = ControlledSchedule(base)
    # The public setter also stops tracking the old rate variable, so the
    # optimizer's variables are those of an optimizer built with a schedule:
    # a model saved now loads back with matching optimizer state.
    optimizer.learning_rate = controlled
    _renew_variable_list(optimizer)
    rebuild_train_function(model)
    return controlled


def _renew_variable_list(optimizer) -> None:
    """Gives the optimizer a fresh list of its (unchanged) variables.

    Untracking removed an element from the optimizer's variable list, and
    TensorFlow's checkpointing refuses to save a list an element was removed
    from (its dependencies are positional). A new list with the same
    variables is clean, so ``tf.train.Checkpoint(optimizer=...)`` keeps
    working; Keras's tracker is pointed at it so later variables land there.
    """
    tracker = getattr(optimizer, "_tracker", None)
    config = getattr(tracker, "config", None)
    if not isinstance(config, dict) or "variables" not in config:
        return
    from keras.src.utils.tracking import DotNotTrackScope

    is_attr_type, _ = config["variables"]
    with DotNotTrackScope():  # a plain list, as the optimizer's own __init__ makes
        optimizer._variables = list(optimizer._variables)
    config["variables"] = (is_attr_type, optimizer._variables)


def has_controlled_schedule(model) -> bool:
    """Whether the model's optimizer already runs a ControlledSchedule."""
    optimizer = getattr(model, "optimizer", None)
    return optimizer is not None and isinstance(
        base_optimizer(optimizer)._learning_rate, ControlledSchedule)


def rebuild_train_function(model) -> None:
    """Makes an already built train function see a new learning-rate graph."""
    if getattr(model, "train_function", None) is not None and hasattr(
        model, "make_train_function"
    ):
        model.make_train_function(force=True)


def write_control(model, variable, value: float) -> None:
    """Writes a ControlledSchedule variable (factor or position) from the host.

    On TensorFlow (and torch) the compiled step reads the variable when it
    runs, so the write is all it takes. JAX's compiled step captured the
    value as a constant, so there the train function is rebuilt; the kit
    writes rarely (a cut, an epoch) to keep that cheap.
    """
    value = float(value)
    if float(ops.convert_to_numpy(variable)) == value:
        return
    variable.assign(value)
    if RETRACE_ON_HOST_WRITE:
        rebuild_train_function(model)


RETRACE_ON_HOST_WRITE = keras.backend.backend() == "jax"


def current_learning_rate(model) -> float:
    """The learning rate the optimizer uses for its next step, as a float."""
    optimizer = base_optimizer(model.optimizer)
    return float(ops.convert_to_numpy(optimizer.learning_rate))


def scale_learning_rate(model, factor: float, min_lr: float = 0.0) -> tuple[float, float]:
    """Multiplies the LR by ``factor`` (never below ``min_lr``).

    Returns ``(old_lr, new_lr)``. The cut goes into the schedule's
    ``factor``, so a time-based schedule keeps its shape.
    """
    controlled = controlled_schedule(model)
    old_lr = current_learning_rate(model)
    new_lr = max(old_lr * factor, min_lr)
    old_factor = float(ops.convert_to_numpy(controlled.factor))
    if old_lr > 0:
        write_control(model, controlled.factor, old_factor * new_lr / old_lr)
    return old_lr, current_learning_rate(model)


def record_learning_rate(model, logs) -> None:
    """Writes the LR in effect into the epoch logs unless already there."""
    if logs is not None and "learning_rate" not in logs:
        logs["learning_rate"] = current_learning_rate(model)
