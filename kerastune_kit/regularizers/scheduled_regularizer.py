"""A regularizer whose strength is a variable, changeable during training."""

from __future__ import annotations

import weakref
from typing import Any

import keras
from keras import ops

from kerastune_kit._args.validation import check_non_negative, show
from kerastune_kit._keras.scalars import host_float
from kerastune_kit._model_state.optimizer import invalidate_traces
from kerastune_kit.regularizers import lookup

# Bare names mean the base penalty at unit strength, so that ``strength``
# is the coefficient itself: ``ScheduledRegularizer(1e-4, "l2")`` is
# ``L2(1e-4)`` for as long as the strength is not changed.
_UNIT_BASES = {
    "l1": lambda: keras.regularizers.L1(1.0),
    "l2": lambda: keras.regularizers.L2(1.0),
    "l1l2": lambda: keras.regularizers.L1L2(1.0, 1.0),
    "orthogonal": lambda: keras.regularizers.OrthogonalRegularizer(1.0),
}


@keras.saving.register_keras_serializable(package="kerastune_kit")
class ScheduledRegularizer(keras.regularizers.Regularizer):
    """A penalty ``strength * base(w)`` whose strength can change mid-training.

    ``strength`` is a non-trainable ``keras.Variable``: a callback calling
    :meth:`set_strength` changes the penalty from the next step on, with no
    retrace under TensorFlow and torch (under JAX, with one). A bare
    ``base`` name (``"l1"``, ``"l2"``, ``"l1l2"``, ``"orthogonal"``) means
    that penalty at unit strength, so ``ScheduledRegularizer(1e-4)`` equals
    ``L2(1e-4)``; any other spec is scaled as given. ``get_config`` records
    the current strength, so a saved model loads back with it. More:
    ``docs/regularizers.md``.

    Args:
        strength: the initial multiplier, a finite number ``>= 0``.
            Defaults to 0.0 (no penalty until a callback raises it).
        base: the penalty to scale: anything
            :func:`~kerastune_kit.regularizers.get` accepts but None and
            another ``ScheduledRegularizer``. Defaults to ``"l2"``.

    Example:

    ```python
    from kerastune_kit import regularizers
    reg = regularizers.ScheduledRegularizer(0.0, base="l2")
    regularizers.apply(model, kernel=reg)
    ramp = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: reg.set_strength(1e-4 * min(epoch, 5) / 5))
    model.fit(x, y, epochs=10, callbacks=[ramp])
    ```
    """

    def __init__(self, strength: float = 0.0, base: Any = "l2"):
        strength = check_non_negative("strength", strength)
        self.base = _resolve_base(base)
        self.strength = keras.Variable(
            float(strength), dtype="float32", trainable=False, name="regularizer_strength")

    def __call__(self, x):
        return ops.cast(self.strength, self._dtype_of(x)) * self.base(x)

    @staticmethod
    def _dtype_of(x):
        dtype = getattr(x, "dtype", None)
        return "float32" if dtype is None else keras.backend.standardize_dtype(dtype)

    def set_strength(self, value: float) -> None:
        """Sets the multiplier, a finite number ``>= 0``; the next step uses it.

        Under JAX, which compiles the strength as a constant, a change
        retraces the train function of each model that
        :func:`~kerastune_kit.regularizers.apply` attached this to; one
        given to a layer's constructor is picked up at the next trace only.
        """
        value = float(check_non_negative("strength", value))
        if host_float(self.strength) == value:
            return
        self.strength.assign(value)
        if keras.backend.backend() == "jax":
            for model in list(self._models):
                invalidate_traces(model, evaluation=True)

    @property
    def _models(self) -> weakref.WeakSet:
        if "_attached_models" not in self.__dict__:
            self._attached_models = weakref.WeakSet()
        return self._attached_models

    def attached_to(self, model) -> None:
        """Records a model this regularizer penalises (``regularizers.apply`` calls it)."""
        self._models.add(model)

    def get_config(self) -> dict:
        return {
            "strength": host_float(self.strength),
            "base": keras.saving.serialize_keras_object(self.base),
        }

    @classmethod
    def from_config(cls, config: dict) -> ScheduledRegularizer:
        return cls(**config)


def _resolve_base(base: Any) -> keras.regularizers.Regularizer:
    if isinstance(base, str) and base.strip() in _UNIT_BASES:
        return _UNIT_BASES[base.strip()]()
    try:
        resolved = lookup.get(base)
    except ValueError as err:
        raise ValueError(f"`base`: {err}") from None
    if resolved is None or isinstance(resolved, ScheduledRegularizer):
        raise ValueError(
            "`base` must be a fixed penalty: 'l1', 'l2', 'l1l2', 'orthogonal', "
            "a regularizer spec or a Keras regularizer (not None and not "
            f"another ScheduledRegularizer); got {show(base)}.")
    return resolved


lookup.register(("scheduled", "ScheduledRegularizer"), ScheduledRegularizer)
