"""The weights a model is evaluated with: its optimizer's average, where it keeps one.

Keras's ``use_ema=True`` (any optimizer) keeps an exponential moving average
of the trainable weights in the optimizer and writes it into the model at
the end of ``fit``; ``ScheduleFreeAdamW`` trains the model's variables at
``y = (1 - beta_1) z + beta_1 x`` and its averaged point is ``x``. Those are
the weights a user keeps, so they are the ones the kit validates, keeps as
the best epoch, restores and ends training on. This module owns that
concept: which averaging an optimizer does, the evaluated values, swapping
them in for a validation pass (and the raw ones back), putting evaluated
weights back as the training state (the average restarts there), and the
hooks that give the kit's callbacks all of it inside a fit.

Only ``keras`` and NumPy: the callbacks run under TensorFlow, JAX and torch.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from kerastune_kit._keras import private as private
from kerastune_kit._keras.scalars import host_float, host_int
from kerastune_kit._model_state import optimizer as _optimizer

_SWAP = "_kerastune_kit_evaluated_swap"


def averaging(optimizer) -> str | None:
    """``"ema"`` (``use_ema=True``), ``"schedule_free"`` (``ScheduleFreeAdamW``)
    or None: what the optimizer averages.

    ``use_ema`` wins when both apply: Keras writes the moving average into
    the model at the end of ``fit``.
    """
    if optimizer is None:
        return None
    optimizer = _optimizer.base_optimizer(optimizer)
    if getattr(optimizer, "use_ema", False):
        return "ema"
    # Keras before 3.15 has no ScheduleFreeAdamW.
    schedule_free = getattr(keras.optimizers, "ScheduleFreeAdamW", None)
    if schedule_free is not None and isinstance(optimizer, schedule_free):
        return "schedule_free"
    return None


def _averaged(model) -> list[tuple[keras.Variable, np.ndarray]]:
    """``(trainable variable, its evaluated value)`` for each variable the
    optimizer averages; empty when it averages nothing (yet)."""
    optimizer = getattr(model, "optimizer", None)
    kind = averaging(optimizer)
    if kind is None:
        return []
    optimizer = _optimizer.base_optimizer(optimizer)
    if not optimizer.built:
        return []
    _optimizer.host_sync(model)
    if kind == "ema":
        # Keras sets the average to the weights at the first step; before
        # it the slots hold zeros.
        if host_int(optimizer.iterations) == 0:
            return []
        pairs = ((v, private.moving_average_of(optimizer, v)) for v in model.trainable_weights)
        return [(v, _numpy(average)) for v, average in pairs if average is not None]
    beta = _beta_1(optimizer)
    found = []
    for variable in model.trainable_weights:
        z = private.schedule_free_z(optimizer, variable)
        if z is not None:
            y, z = _numpy(variable), _numpy(z)
            x = ((y - (1.0 - beta) * z) / beta).astype(y.dtype)
            # Where y = z (just restarted) x is y itself, not y after a rounding.
            found.append((variable, np.where(y == z, y, x)))
    return found


def evaluated_values(model) -> list[np.ndarray]:
    """The values of ``model.weights`` that the model is evaluated with:
    trainable weights replaced by the optimizer's average, the others as
    they are (``model.get_weights()`` when nothing is averaged)."""
    _optimizer.host_sync(model)
    values = model.get_weights()
    if model.__dict__.get(_SWAP) is not None:
        return values  # swapped in: the model holds them now
    averaged = {id(v): value for v, value in _averaged(model)}
    if not averaged:
        return values
    return [averaged.get(id(v), value) for v, value in zip(model.weights, values)]


def swap_in(model, owner) -> None:
    """Puts the evaluated weights into ``model``, keeping the raw ones, until
    ``owner`` calls :func:`swap_out`. Reentrant per model: while one owner's
    swap is in place, another's ``swap_in``/``swap_out`` do nothing, so two
    kit callbacks of one fit swap once. The optimizer is not touched."""
    if model.__dict__.get(_SWAP) is not None:
        return
    averaged = _averaged(model)
    if not averaged:
        return
    raw = [(variable, _numpy(variable)) for variable, _ in averaged]
    for variable, value in averaged:
        variable.assign(value)
    model.__dict__[_SWAP] = {"owner": owner, "raw": raw}


def swap_out(model, owner) -> None:
    """Puts back the raw weights of ``owner``'s :func:`swap_in`."""
    swap = model.__dict__.get(_SWAP)
    if swap is None or swap["owner"] is not owner:
        return
    _optimizer.host_sync(model)
    for variable, value in swap["raw"]:
        variable.assign(value)
    del model.__dict__[_SWAP]


def end_swap(model) -> None:
    """Puts the raw weights back if a swap is still in place: an exception
    ended a validation pass before its ``on_test_end``."""
    swap = model.__dict__.get(_SWAP)
    if swap is not None:
        swap_out(model, swap["owner"])


@contextlib.contextmanager
def evaluated_weights(model):
    """Inside, ``model`` holds its evaluated weights; the raw ones come back
    at the end, also after an exception. Nested or beside a callback's swap,
    the weights are swapped once."""
    owner = object()
    swap_in(model, owner)
    try:
        yield
    finally:
        swap_out(model, owner)


def restart_averaging(model) -> None:
    """Makes the model's current weights the training state: the average
    restarts at them (EMA: the average := the weights; ScheduleFree: ``z`` :=
    the weights, so ``y = x = z``), so later steps continue from there. A
    swap in place is forgotten: its raw weights were replaced too."""
    model.__dict__.pop(_SWAP, None)
    optimizer = getattr(model, "optimizer", None)
    if averaging(optimizer) is None:
        return
    optimizer = _optimizer.base_optimizer(optimizer)
    if not optimizer.built:
        return
    _optimizer.host_sync(model)
    schedule_free = getattr(keras.optimizers, "ScheduleFreeAdamW", None)
    for variable in model.trainable_weights:
        slots = []
        if getattr(optimizer, "use_ema", False):
            slots.append(private.moving_average_of(optimizer, variable))
        if schedule_free is not None and isinstance(optimizer, schedule_free):
            slots.append(private.schedule_free_z(optimizer, variable))
        value = None
        for slot in slots:
            if slot is not None:
                value = _numpy(variable) if value is None else value
                slot.assign(value)


def put_back(model, values) -> None:
    """Makes ``values`` (of ``model.weights``, as :func:`evaluated_values`
    returns them) the model's training state: written into the model, the
    average restarted at them (:func:`restart_averaging`)."""
    _optimizer.host_sync(model)
    model.set_weights(values)
    restart_averaging(model)


def finalize(model) -> None:
    """Ends training on the evaluated weights: for EMA what Keras's
    ``optimizer.finalize_variable_values`` does (``model.fit`` did it already;
    doing it again changes nothing), for ScheduleFree ``x``, with ``z``
    restarted there so that a later fit continues from it."""
    optimizer = getattr(model, "optimizer", None)
    kind = averaging(optimizer)
    if kind is None or not _optimizer.base_optimizer(optimizer).built:
        return
    end_swap(model)
    if kind == "schedule_free":
        put_back(model, evaluated_values(model))
    elif host_int(_optimizer.base_optimizer(optimizer).iterations) > 0:
        _optimizer.host_sync(model)
        optimizer.finalize_variable_values(model.trainable_weights)


def check_no_keras_swap(model, callbacks, owner: str) -> None:
    """Refuses ``keras.callbacks.SwapEMAWeights`` beside the kit's swap: it
    would exchange the model's weights with the average a second time, and
    the kit would then read the raw weights as the average."""
    if averaging(getattr(model, "optimizer", None)) != "ema":
        return
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.SwapEMAWeights):
            raise ValueError(
                f"{owner} already validates, keeps and restores the optimizer's moving "
                "average (use_ema=True); keras.callbacks.SwapEMAWeights beside it would swap "
                "the weights a second time and the average would be read as the raw "
                "weights. Remove SwapEMAWeights from the callbacks.")


class ValidatesEvaluatedWeights:
    """Mixin of the kit callbacks that keep weights (``EarlyStopping``,
    ``BackupAndRestore``): inside a fit, validation runs on the evaluated
    weights, and training ends on them.

    Swaps at ``on_test_begin``/``on_test_end`` (``model.fit`` runs its
    validation with the fit's callback list, so these hooks fire for it)
    and finalizes at ``on_train_end``; each hook calls the next class's
    first, so a subclass's own ``on_train_end`` calls ``super()`` before it
    restores anything.
    """

    def set_model(self, model):
        super().set_model(model)
        self._in_fit = False

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        model = private.callback_model(self)
        end_swap(model)
        self._in_fit = True

    def on_test_begin(self, logs=None):
        super().on_test_begin(logs)
        if self.__dict__.get("_in_fit"):
            swap_in(self.model, self)

    def on_test_end(self, logs=None):
        if self.__dict__.get("_in_fit"):
            swap_out(self.model, self)
        super().on_test_end(logs)

    def on_train_end(self, logs=None):
        if self.__dict__.get("_in_fit"):
            finalize(self.model)
            self._in_fit = False
        super().on_train_end(logs)


def _beta_1(optimizer) -> float:
    beta = optimizer.beta_1
    return host_float(beta() if callable(beta) else beta)


def _numpy(variable) -> np.ndarray:
    return np.array(variable.numpy(), copy=True)
