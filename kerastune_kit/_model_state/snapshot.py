"""In-memory copies of a model's training state, to put back later.

Used by the divergence guard (its last good state) and by the budgeted
recipe's peak search (which trains a few steps and must leave no trace).
"""

from __future__ import annotations

import contextlib

import numpy as np

from kerastune_kit._model_state import optimizer as _optimizer


def build_optimizer(model) -> None:
    """Builds the optimizer's slots now, as its first step would, in the
    model's strategy scope (so they are mirrored where the model's are)."""
    optimizer = model.optimizer
    if optimizer.built:
        return
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        optimizer.build(model.trainable_variables)


class Snapshot:
    """NumPy copies of the model's weights and the optimizer's own variables
    (step counter and slots; not the kit's LR controls).

    Args:
        model: a compiled model; its optimizer is built first if needed.
    """

    def __init__(self, model):
        build_optimizer(model)
        self.model = model
        weights, optimizer_variables = self._current_variables()
        self.weights = _numpy(weights)
        self.optimizer_variables = _numpy(optimizer_variables)

    def _current_variables(self):
        _optimizer.host_sync(self.model)
        return (list(self.model.weights),
                _optimizer.own_variables(self.model.optimizer))

    def is_finite(self) -> bool:
        return all(_finite(a) for a in [*self.weights, *self.optimizer_variables])

    def restore(self) -> None:
        """Puts the copies back, and drops the state a training loop holds in
        flight for this model (see :func:`on_restore`)."""
        weights, optimizer_variables = self._current_variables()
        for variable, value in zip(weights, self.weights):
            variable.assign(value)
        for variable, value in zip(optimizer_variables, self.optimizer_variables):
            variable.assign(value)
        for reset in self.model.__dict__.get(_IN_FLIGHT, {}).values():
            reset()


_IN_FLIGHT = "_kerastune_kit_in_flight"


def on_restore(model, name: str, reset) -> None:
    """Registers ``reset()``, called whenever a snapshot of ``model`` is put
    back: a training loop's in-flight state (the Trainer's gradient
    accumulators) belongs to the steps a rollback undoes."""
    model.__dict__.setdefault(_IN_FLIGHT, {})[name] = reset


_LISTENERS = "_kerastune_kit_weights_replaced"


def on_weights_replaced(model, name: str, listener) -> None:
    """Registers ``listener()`` (None: removes ``name``'s), called when a
    callback puts earlier weights back during training (a rollback to the
    best epoch): state measured since then, such as the divergence guard's
    best loss, belongs to the weights that were replaced."""
    listeners = model.__dict__.setdefault(_LISTENERS, {})
    if listener is None:
        listeners.pop(name, None)
    else:
        listeners[name] = listener


def weights_replaced(model) -> None:
    """Tells the listeners of ``model`` that earlier weights were put back."""
    for listener in list(model.__dict__.get(_LISTENERS, {}).values()):
        listener()


def weights_finite(model) -> bool:
    _optimizer.host_sync(model)
    return all(_finite(a) for a in _numpy(model.weights))


def _numpy(variables) -> list[np.ndarray]:
    return [np.array(v.numpy(), copy=True) for v in variables]


def _finite(array: np.ndarray) -> bool:
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())
