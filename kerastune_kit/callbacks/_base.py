"""What every kit callback has in common: ``KitCallback``.

``KitCallback`` carries the state protocol (``get_state()`` returns plain
JSON-able data, ``set_state(state)`` puts it back, so a resumed run
continues exactly), the reset of per-run state at train begin unless a
backup restored it, the decisions (``events``) and the registry of the kit
callbacks of one fit call. What a callback watching a metric adds lives in
:mod:`kerastune_kit.callbacks.monitor_callback` (``MonitorCallback``).
"""

from __future__ import annotations

import math
from typing import Any

import keras

from kerastune_kit._keras import private as private


class KitCallback(keras.callbacks.Callback):
    """Base of the kit's callbacks: the JSON state protocol and the registry.

    Subclasses list the attribute names that make up their state in
    ``_state_attributes``; override ``get_state``/``set_state`` when the state
    is more than plain attributes.

    Every kit callback registers itself on the model when a ``CallbackList``
    (of ``model.fit`` or the kit's ``Trainer``) hands it the model, so a
    callback can find its siblings of the same fit call with
    :func:`kit_callbacks` (the backup saves their state, the TensorBoard
    writer shows their ``events``).
    """

    _state_attributes: tuple[str, ...] = ()
    # The constructor arguments that tell two callbacks of one class apart
    # in a backup (see :attr:`state_key`).
    _key_arguments: tuple[str, ...] = ()

    @property
    def state_key(self) -> str:
        """The name of this callback's state in a backup: the class name and
        the identifying arguments, e.g. ``"EarlyStopping(monitor='val_loss')"``,
        so a backup is matched by what a callback is, not where it sits."""
        arguments = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._key_arguments)
        return f"{type(self).__name__}({arguments})"

    def get_arrays(self) -> dict[str, Any] | None:
        """NumPy arrays to keep across a restart, beside ``get_state()`` (e.g.
        EarlyStopping's in-memory best weights), or None."""
        return None

    def set_arrays(self, arrays: dict[str, Any]) -> None:
        """Puts back what :meth:`get_arrays` returned."""

    def set_model(self, model):
        super().set_model(model)
        _register(model, self)
        # A CallbackList hands the model over before training begins.
        self._training_begun = False

    @property
    def events(self) -> list[dict[str, Any]]:
        """The decisions this callback took, oldest first: dicts with
        ``callback`` (the class name), ``kind`` (``"lr_cut"``, ``"stop"``,
        ...), ``epoch`` (0-based), ``reason`` and the kind's own keys."""
        if "_events" not in self.__dict__:
            self._events = []
        return self._events

    def record_event(self, kind: str, epoch: int, reason: str, **fields: Any) -> dict:
        """Appends a decision to :attr:`events` and returns it."""
        event = {"callback": type(self).__name__, "kind": kind, "epoch": int(epoch),
                 "reason": reason}
        event.update({k: _jsonable(v) for k, v in fields.items()})
        self.events.append(event)
        return event

    def on_train_begin(self, logs=None):
        """Starts a run: the per-run state is reset unless ``set_state()``
        restored it for this run. Subclasses call it first."""
        _seal(private.callback_model(self))
        self._training_begun = True
        if self._starts_fresh():
            self._reset_tracking()

    def _reset_tracking(self) -> None:
        """Resets the per-run state a fresh fit starts from (the counters a
        restored state would carry). Nothing by default."""

    def get_state(self) -> dict[str, Any]:
        """Returns the callback's state as plain JSON-able data, ``events``
        included, so a resumed run continues and reports every decision."""
        state = {name: _jsonable(getattr(self, name)) for name in self._state_attributes}
        state["events"] = [dict(e) for e in self.events]
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a state returned by ``get_state()``; the next
        ``on_train_begin`` keeps it. Raises a ``ValueError`` for unknown keys."""
        # Subclasses that override it call super().set_state(...) or
        # _mark_restored(), so that the next on_train_begin keeps the restored
        # counters instead of resetting them (a backup may restore state
        # before or after this callback's on_train_begin).
        state = dict(state)
        events = state.pop("events", None)
        unknown = set(state) - set(self._state_attributes)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.set_state got unknown keys {sorted(unknown)}; "
                f"accepted keys: {[*self._state_attributes, 'events']}."
            )
        for name, value in state.items():
            setattr(self, name, value)
        if events is not None:
            self._events = [dict(e) for e in events]
        self._mark_restored()

    def _mark_restored(self) -> None:
        # Restored after on_train_begin, the state is simply in place; only a
        # restore before it must stop on_train_begin from resetting it.
        self._state_restored = not self.__dict__.get("_training_begun", False)

    def _starts_fresh(self) -> bool:
        """Whether this ``on_train_begin`` resets the per-run state.

        False once after :meth:`set_state`: the restored state is kept.
        """
        fresh = not self.__dict__.get("_state_restored", False)
        self._state_restored = False
        return fresh


_REGISTRY_ATTR = "_kerastune_kit_callbacks"


def _register(model, callback) -> None:
    # A CallbackList sets the model on all its callbacks, then begins
    # training. A set_model after a training began therefore starts the
    # registry of a new fit call.
    registry = model.__dict__.get(_REGISTRY_ATTR)
    if registry is None or registry["sealed"]:
        registry = {"callbacks": [], "sealed": False}
        model.__dict__[_REGISTRY_ATTR] = registry
    if not any(c is callback for c in registry["callbacks"]):
        registry["callbacks"].append(callback)


def _seal(model) -> None:
    registry = getattr(model, "__dict__", {}).get(_REGISTRY_ATTR)
    if registry is not None:
        registry["sealed"] = True


def kit_callbacks(model) -> list[KitCallback]:
    """The kit callbacks of the current (or last) fit call on ``model``."""
    registry = getattr(model, "__dict__", {}).get(_REGISTRY_ATTR)
    return list(registry["callbacks"]) if registry else []


def _jsonable(value):
    """Converts NumPy scalars, tuples and non-finite floats to plain JSON data."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value
