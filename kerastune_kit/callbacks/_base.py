"""What the kit's callbacks have in common.

``KitCallback`` carries the state protocol: ``get_state()`` returns plain
JSON-able data and ``set_state(state)`` puts it back, so a resumed run
continues exactly. ``MonitorCallback`` adds what every callback watching a
metric needs: the direction of the metric, the improvement test and a clear
error when the metric is missing from the logs.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
import warnings
from typing import Any

import keras
import numpy as np

from kerastune_kit import _keras_private as private
from kerastune_kit._validation import check_choice, check_non_negative

_MIN_PATTERN = re.compile(
    r"loss|error|err$|mse|mae|mape|msle|crossentropy|hinge|perplexity|divergence", re.I)
_MAX_PATTERN = re.compile(
    r"acc|auc|precision|recall|f1|fbeta|iou|r2|score|top_k|hits|ndcg|map$", re.I)


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
    # The keys this callback may write into the epoch logs, or None when it
    # cannot say: the monitor check at train begin reads them.
    _adds_log_keys: tuple[str, ...] | None = ("learning_rate",)

    @property
    def state_key(self) -> str:
        """The name of this callback's state in a backup.

        The class name and the identifying arguments, e.g.
        ``"EarlyStopping(monitor='val_loss')"``: a backup is matched to the
        callbacks of a restarted run by what they are, not by where they sit
        in the list.
        """
        arguments = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._key_arguments)
        return f"{type(self).__name__}({arguments})"

    def get_arrays(self) -> dict[str, Any] | None:
        """NumPy arrays this callback must keep across a restart, or None.

        What is too big for the JSON state (EarlyStopping's in-memory best
        weights). Backups save them beside :meth:`get_state`.
        """
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
        """The decisions this callback took, oldest first (plain dicts).

        Every event has ``callback`` (the class name), ``kind`` (``"lr_cut"``,
        ``"rollback"``, ``"stop"``, ...), ``epoch`` (0-based) and ``reason``;
        each callback documents its extra keys. The TensorBoard writer shows
        them as markers.
        """
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
        _seal(self._model)
        self._training_begun = True

    def get_state(self) -> dict[str, Any]:
        """Returns the callback's state as plain JSON-able data.

        The attributes named in ``_state_attributes``, plus ``events``: the
        decisions taken so far, so a resumed run reports them all.
        """
        state = {name: _jsonable(getattr(self, name)) for name in self._state_attributes}
        state["events"] = [dict(e) for e in self.events]
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a state returned by :meth:`get_state`.

        Subclasses that override it call ``super().set_state(...)`` or
        :meth:`_mark_restored`, so that the next ``on_train_begin`` keeps the
        restored counters instead of starting a fresh run (a backup may
        restore state before or after this callback's ``on_train_begin``).
        """
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
        """Whether ``on_train_begin`` should reset per-run counters.

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


def log_scalar(name: str, value, owner: str) -> float:
    """A logged value as a float: a number, or an array of one element (as
    Keras's ``F1Score`` logs for one class); anything bigger is refused."""
    if isinstance(value, numbers.Real):
        return float(value)
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(
            f"{owner}: the monitored {name!r} is an array of shape {array.shape} in the "
            "logs; a monitor needs one number (for a per-class metric, log its mean, e.g. "
            "F1Score(average='macro')).")
    return float(array.reshape(()))


class MissingMonitorError(KeyError, ValueError):
    """The monitored quantity is not in the logs; the message lists what is.

    Raised at the first epoch end without it, or at train begin when the
    keys a fit can log are all known and ``monitor`` is not among them (a
    ``KeyError`` for the missing key, a ``ValueError`` for the bad argument).
    """

    def __str__(self) -> str:  # KeyError would repr() the message.
        return str(self.args[0])


def missing_monitor_message(owner: str, monitor: str, logs) -> str:
    """Says that ``monitor`` is not in ``logs``, lists the keys present and
    suggests the closest one (or validation data for a missing ``val_``)."""
    present = ", ".join(sorted(logs)) or "(none)"
    message = f"{owner}: monitor={monitor!r} is not in the logs. Keys present: {present}."
    if monitor.startswith("val_") and not any(k.startswith("val_") for k in logs):
        return (message + " The logs have no validation values: pass validation_data or "
                "validation_split to fit (validation_freq=1 for every epoch).")
    close = closest_key(monitor, logs)
    return message + (f" Did you mean {close!r}?" if close else "")


def monitor_direction(monitor: str, model=None) -> str | None:
    """``"min"`` or ``"max"`` for a metric name, or ``None`` if unknown.

    Names with loss/error-like words are minimised; accuracy, AUC,
    precision, recall, F1-like names maximised. Otherwise a Keras metric of
    that name on ``model`` is asked for its direction.
    """
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if _MIN_PATTERN.search(name):
        return "min"
    if _MAX_PATTERN.search(name):
        return "max"
    for metric in _flat_metrics(model):
        if getattr(metric, "name", None) == name:
            direction = getattr(metric, "_direction", None)
            if direction in ("up", "down"):
                return "max" if direction == "up" else "min"
    return None


def _flat_metrics(model):
    stack = list(getattr(model, "metrics", []) or [])
    while stack:
        metric = stack.pop()
        # Compiled metrics are built lazily: before the first step only the
        # user's lists (`_user_metrics`, ...) hold them.
        for attr in ("metrics", "_user_metrics", "_user_weighted_metrics"):
            inner = getattr(metric, attr, None)
            if inner:
                stack.extend(m for m in keras.tree.flatten(inner) if hasattr(m, "name"))
        yield metric


_LOGGED_NAMES_ATTR = "_kerastune_kit_logged_names"


def declare_logged_names(callback_list, names) -> None:
    """Tells the kit's monitors which names a training loop logs.

    For loops other than ``model.fit`` (the kit's ``Trainer``): call it on
    the ``keras.callbacks.CallbackList`` before ``on_train_begin`` with the
    names of the epoch logs (``"loss"`` and the metrics; validation adds
    their ``val_`` forms). A monitor can then report a misspelt name before
    the first epoch.
    """
    setattr(callback_list, _LOGGED_NAMES_ATTR, [str(n) for n in names])


def logged_keys(callback) -> set[str] | None:
    """Every key the epoch logs of the running fit can hold, as seen from
    ``callback``'s ``on_train_begin``; None when that cannot be known.

    The names the model (or the loop) logs, their ``val_`` forms (a callback
    is not told whether there is validation data, so both count), and what
    the other callbacks of the same ``CallbackList`` may add: nothing for
    callbacks that keep ``Callback.on_epoch_end``, ``learning_rate`` for
    Keras's own and the kit's; any other ``on_epoch_end`` may add anything,
    and then nothing can be known.
    """
    callbacks = private.running_callback_list(callback)
    if callbacks is None:
        return None
    names = getattr(callbacks, _LOGGED_NAMES_ATTR, None)
    if names is None:
        names = private.logged_metric_names(callback.model)
    if names is None:
        return None
    keys = set(names) | {f"val_{name}" for name in names}
    for other in callbacks.callbacks:
        if other is callback:
            continue
        if isinstance(other, KitCallback):
            if other._adds_log_keys is None:
                return None
            keys.update(other._adds_log_keys)
            continue
        hook = getattr(type(other), "on_epoch_end", None)
        if hook is keras.callbacks.Callback.on_epoch_end:
            continue
        owner = getattr(hook, "__module__", "") or ""
        if owner.startswith("keras.") and type(other).__name__ != "LambdaCallback":
            keys.add("learning_rate")  # ReduceLROnPlateau, LearningRateScheduler
            continue
        return None  # a callback of the user's may write any key
    return keys


def closest_key(name: str, keys) -> str | None:
    """The key most like ``name`` (difflib), if any is close enough."""
    found = difflib.get_close_matches(name, sorted(keys), n=1, cutoff=0.6)
    return found[0] if found else None


def check_monitor_logged(callback, monitor: str) -> None:
    """Raises :class:`MissingMonitorError` at train begin when ``monitor``
    cannot appear in the epoch logs of this fit, suggesting the closest key
    that can.

    Only when every key can be known (:func:`logged_keys`); otherwise the
    first epoch end tells (:class:`MissingMonitorError`).
    """
    keys = logged_keys(callback)
    if keys is None or monitor in keys or monitor.startswith("learning_rate"):
        return
    close = closest_key(monitor, keys)
    hint = f" Did you mean {close!r}?" if close else ""
    # learning_rate is what LR callbacks add; the model's own keys are the news.
    shown = ", ".join(sorted((k for k in keys if not k.startswith("learning_rate")),
                             key=lambda k: (k.startswith("val_"), k)))
    raise MissingMonitorError(
        f"{type(callback).__name__}: monitor={monitor!r} is not in the logs. Keys present: "
        f"{shown} (every key this fit can log; the val_ ones with validation data).{hint}")


class MonitorCallback(KitCallback):
    """Base for callbacks that watch one metric.

    Args:
        monitor: the quantity in the logs, e.g. ``"val_loss"``.
        mode: ``"auto"``, ``"min"`` or ``"max"``. ``"auto"`` infers the
            direction from the name or the model's metric; if it cannot, a
            ``ValueError`` asks for ``mode``.
        min_delta: how much better a value must be to count as an
            improvement, ``>= 0``.
        min_delta_mode: ``"abs"``: better by ``min_delta``; ``"rel"``: better
            by the fraction ``min_delta`` of the best value.
        on_missing: ``"raise"``: a ``KeyError`` naming the missing key and the
            keys present; ``"warn"``: warn once and skip the epoch.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto",
                 min_delta: float = 0.0, min_delta_mode: str = "abs",
                 on_missing: str = "raise"):
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"`monitor` must be a non-empty metric name, got {monitor!r}.")
        self.monitor = monitor
        self.mode = check_choice("mode", mode, ("auto", "min", "max"))
        self.min_delta = float(check_non_negative("min_delta", min_delta))
        self.min_delta_mode = check_choice("min_delta_mode", min_delta_mode, ("abs", "rel"))
        self.on_missing = check_choice("on_missing", on_missing, ("raise", "warn"))
        self._direction = None if mode == "auto" else mode
        if self._direction is None:
            self._direction = monitor_direction(monitor)
        self._warned_missing = False

    @property
    def direction(self) -> str:
        """``"min"`` or ``"max"``, resolved at the latest at train begin."""
        if self._direction is None:
            self._direction = monitor_direction(self.monitor, getattr(self, "_model", None))
        if self._direction is None:
            raise ValueError(
                f"{type(self).__name__} cannot tell whether monitor={self.monitor!r} "
                "should be minimised or maximised; pass mode='min' or mode='max'."
            )
        return self._direction

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.on_missing == "raise":
            # A misspelt name is told now, not after an epoch of training, and
            # before the direction, whose error would blame `mode`.
            check_monitor_logged(self, self.monitor)
        self.direction  # noqa: B018 - resolves "auto" or raises before training.

    def _is_improvement(self, value: float, reference: float | None) -> bool:
        """Whether ``value`` beats ``reference`` by the required margin."""
        if not math.isfinite(value):
            return False
        if reference is None:
            return True
        margin = self.min_delta
        if self.min_delta_mode == "rel":
            margin = self.min_delta * abs(reference)
        if self.direction == "min":
            return value < reference - margin
        return value > reference + margin

    def _is_better(self, value: float, reference: float | None) -> bool:
        """Plain comparison, no margin (for tracking the best value)."""
        if reference is None:
            return math.isfinite(value)
        return value < reference if self.direction == "min" else value > reference

    def _monitor_value(self, logs) -> float | None:
        """The monitored value as a float, or ``None`` after a warning."""
        logs = logs or {}
        if self.monitor not in logs:
            message = missing_monitor_message(type(self).__name__, self.monitor, logs)
            if self.on_missing == "raise":
                raise MissingMonitorError(message)
            if not self._warned_missing:
                warnings.warn(message, stacklevel=2)
                self._warned_missing = True
            return None
        return log_scalar(self.monitor, logs[self.monitor], type(self).__name__)
