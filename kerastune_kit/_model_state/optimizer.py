"""The optimizer's learning rate and the compiled step's staleness: one owner.

Everything the kit does to an optimizer goes through here:

* :func:`base_optimizer` unwraps loss scaling; :func:`rate_object` is the
  rate as stored (a variable, a schedule, a callable).
* :func:`controlled_schedule` installs the kit's
  :class:`~kerastune_kit.schedules.ControlledSchedule` once, behind a
  :class:`RateHandle`: the optimizer sees a callable rate, so a float that
  Keras's own ``ReduceLROnPlateau`` or ``LearningRateScheduler`` writes to
  ``optimizer.learning_rate`` reaches :meth:`RateHandle.assign` (the rate in
  effect becomes that float, the kit's schedule is scaled) instead of
  Keras's "not settable" ``TypeError``.
* Host-written variables the compiled step reads (the schedule's controls, a
  regularizer's strength) are :func:`carry`-ed: under JAX, where the compiled
  step sees only the state the trainer passes in, they travel in the
  optimizer's state, so writing them needs no retrace; files the optimizer
  saves still hold only its own variables.
* :func:`host_sync` before any host read or write of variables during an
  epoch (under JAX the trainer holds their values); :func:`invalidate_traces`
  when the graph of the step changes (a new rate object, new penalties): it
  resets Keras's compiled functions and bumps :func:`trace_version`, which
  loops that cache their own traced step (the kit's ``Trainer``) read.
"""

from __future__ import annotations

import contextlib

import keras

from kerastune_kit._keras import private as private
from kerastune_kit._keras.scalars import host_float, host_int
from kerastune_kit.schedules import Constant, ControlledSchedule

_CARRIED = "_kerastune_kit_carried"
_TRACE_VERSION = "_kerastune_kit_trace_version"


def base_optimizer(optimizer):
    """The optimizer that owns the learning rate (unwraps loss scaling)."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def rate_object(optimizer):
    """The rate as stored; a :class:`RateHandle` is seen through to its schedule."""
    rate = private.rate_object(base_optimizer(optimizer))
    return rate.schedule if isinstance(rate, RateHandle) else rate


@keras.saving.register_keras_serializable(package="kerastune_kit")
class RateHandle:
    """The optimizer's rate once the kit controls it: a ControlledSchedule at
    the optimizer's own step counter.

    Keras calls a callable rate with no arguments at every step (inside the
    compiled step), and hands a float written to ``optimizer.learning_rate``
    to its ``assign``. Saved, it is its schedule: a ``.keras`` file loads
    back with the plain ``ControlledSchedule`` as the optimizer's rate.
    """

    def __init__(self, schedule: ControlledSchedule, iterations):
        self.schedule = schedule
        self._step_counter = iterations

    def __call__(self):
        return self.schedule(self._step_counter)

    def assign(self, value) -> None:
        self.schedule.set_rate(host_float(value), host_int(self._step_counter))

    def get_config(self):
        return self.schedule.get_config()

    @classmethod
    def from_config(cls, config):
        return ControlledSchedule.from_config(config)


def controlled_schedule(model) -> ControlledSchedule:
    """Returns the model optimizer's ControlledSchedule, installing it once.

    A float rate becomes ``Constant(rate)``, a Keras schedule is wrapped as
    it is, a ``ControlledSchedule`` (a loaded model's) is taken over.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            "The kit's learning-rate callbacks need a compiled model with an "
            "optimizer; call model.compile(optimizer=...) first.")
    optimizer = base_optimizer(optimizer)
    current = private.rate_object(optimizer)
    if isinstance(current, RateHandle):
        carry(model, current.schedule.variables)
        return current.schedule
    if isinstance(current, ControlledSchedule):
        controlled = current
    elif isinstance(current, keras.optimizers.schedules.LearningRateSchedule):
        controlled = ControlledSchedule(current)
    elif callable(current) and not isinstance(current, keras.Variable):
        raise ValueError(
            "The optimizer's learning_rate is a plain callable; the kit's LR "
            "callbacks need a float or a keras LearningRateSchedule.")
    else:
        controlled = ControlledSchedule(Constant(host_float(current)))
    # The public setter also stops tracking an old rate variable, so the
    # optimizer's own variables are those of an optimizer built with a
    # schedule: a model saved now loads back with matching optimizer state.
    optimizer.learning_rate = RateHandle(controlled, private.step_counter(optimizer))
    private.renew_variable_list(optimizer)
    carry(model, controlled.variables)
    invalidate_traces(model)
    return controlled


@contextlib.contextmanager
def borrowed_learning_rate(model):
    """Gives the optimizer's rate back as it was when the block ends.

    Inside, the kit may install and drive a ControlledSchedule; afterwards
    the optimizer holds the rate object it held before (a float's variable,
    tracked again where it was, or the user's schedule), or, when a
    ControlledSchedule was there already, that one with its schedule, unit
    and controls as they were. The compiled step is rebuilt at the next fit.
    """
    optimizer = base_optimizer(model.optimizer)
    before = private.rate_object(optimizer)
    index = private.variable_index(optimizer, before)
    kept = None
    if isinstance(before, RateHandle):
        controlled = before.schedule
        kept = (controlled.schedule, controlled.unit, controlled.controls())
    try:
        yield
    finally:
        if kept is not None:
            controlled.schedule, controlled.unit = kept[0], kept[1]
            controlled.set_controls(**kept[2])
        elif private.rate_object(optimizer) is not before:
            carried = optimizer.__dict__.pop(_CARRIED, [])
            if carried:
                private.remove_optimizer_variables(optimizer, carried)
            private.put_back_rate_object(optimizer, before, index)
        invalidate_traces(model)


def has_controlled_schedule(model) -> bool:
    """Whether the model's optimizer already runs a ControlledSchedule."""
    optimizer = getattr(model, "optimizer", None)
    return optimizer is not None and isinstance(rate_object(optimizer), ControlledSchedule)


def current_learning_rate(model) -> float:
    """The learning rate the optimizer uses for its next step, as a float."""
    host_sync(model)
    return host_float(base_optimizer(model.optimizer).learning_rate)


def step_count(model) -> int:
    """The optimizer's step counter as an int."""
    host_sync(model)
    return host_int(base_optimizer(model.optimizer).iterations)


# Host-written variables ------------------------------------------------------

def carry(model, variables) -> None:
    """Makes the compiled step of ``model`` read ``variables`` at every step.

    TensorFlow and torch read a variable when the step runs, so nothing is
    needed there. Under JAX the compiled step reads only the state Keras's
    trainer passes in; the variables join the optimizer's variables (the
    state slot that is not part of the model's weights), and the
    optimizer's ``save_own_variables``/``load_own_variables`` leave them out,
    so saved files hold only the optimizer's own variables.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or private.backend() != "jax":
        return
    optimizer = base_optimizer(optimizer)
    carried = optimizer.__dict__.setdefault(_CARRIED, [])
    fresh = [v for v in variables if all(v is not c for c in carried)]
    if not fresh:
        return
    carried.extend(fresh)
    private.add_optimizer_variables(optimizer, fresh)
    private.wrap_variable_saving(optimizer, detached=lambda: _detached(optimizer))
    invalidate_traces(model)


def own_variables(optimizer) -> list:
    """The optimizer's variables without the ones the kit carries."""
    optimizer = base_optimizer(optimizer)
    carried = optimizer.__dict__.get(_CARRIED, ())
    return [v for v in optimizer.variables if all(v is not c for c in carried)]


@contextlib.contextmanager
def _detached(optimizer):
    carried = optimizer.__dict__.get(_CARRIED, [])
    private.remove_optimizer_variables(optimizer, carried)
    try:
        yield
    finally:
        private.add_optimizer_variables(optimizer, carried)


def host_sync(model) -> None:
    """Call before reading or writing variables from a batch hook.

    Under JAX the trainer holds the variables' values during an epoch; this
    puts them back and makes its next step re-read them (a host write is
    then seen without a retrace). Elsewhere, and at epoch boundaries, a
    no-op.
    """
    private.jax_state_sync(model)


# Staleness of the compiled step ------------------------------------------------

def invalidate_traces(model, *, evaluation: bool = False) -> None:
    """The graph of the train step changed: retrace before the next step.

    Rebuilds Keras's train function if one was built (``model.fit`` builds
    it before ``on_train_begin``, so it must exist again at once) and bumps
    :func:`trace_version`. ``evaluation=True`` (the loss itself changed, e.g.
    new penalties) also drops the test and predict functions.
    """
    if evaluation:
        model.test_function = None
        model.predict_function = None
    if getattr(model, "train_function", None) is not None and hasattr(
            model, "make_train_function"):
        model.make_train_function(force=True)
    model.__dict__[_TRACE_VERSION] = trace_version(model) + 1


def trace_version(model) -> int:
    """How often the graph of ``model``'s step was invalidated."""
    return getattr(model, "__dict__", {}).get(_TRACE_VERSION, 0)
