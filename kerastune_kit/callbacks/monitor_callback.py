"""The base of the callbacks that watch one metric: ``MonitorCallback``.

One owner for what every monitor needs: the direction of the metric (the
only place that knows "min" from "max") and every comparison made with it
(improvement by a margin, plain "better", thresholds, a signed trend) and
the error when the monitored key is missing from the first epoch's logs,
with the closest key present.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
import warnings

import keras
import numpy as np

from kerastune_kit._args.validation import check_choice, check_non_negative
from kerastune_kit._keras import private as private
from kerastune_kit.callbacks._base import KitCallback

_MIN_PATTERN = re.compile(
    r"loss|error|err$|mse|mae|mape|msle|crossentropy|hinge|perplexity|divergence", re.I)
_MAX_PATTERN = re.compile(
    r"acc|auc|precision|recall|f1|fbeta|iou|r2|score|top_k|hits|ndcg|map$", re.I)


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

    Raised at the first epoch end without it (a ``KeyError`` for the missing
    key, a ``ValueError`` for the bad argument).
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
            direction = private.metric_direction(metric)
            if direction in ("up", "down"):
                return "max" if direction == "up" else "min"
    return None


def _flat_metrics(model):
    stack = list(getattr(model, "metrics", []) or [])
    while stack:
        metric = stack.pop()
        # Compiled metrics are built lazily: before the first step only the
        # user's lists hold them.
        for inner in private.compiled_metric_lists(metric):
            if inner:
                stack.extend(m for m in keras.tree.flatten(inner) if hasattr(m, "name"))
        yield metric


def closest_key(name: str, keys) -> str | None:
    """The key most like ``name`` (difflib), if any is close enough."""
    found = difflib.get_close_matches(name, sorted(keys), n=1, cutoff=0.6)
    return found[0] if found else None


class MonitorCallback(KitCallback):
    """Base for callbacks that watch one metric in the epoch logs.

    It resolves the metric's direction (``direction``) and owns every
    comparison made with it (``_improves`` by the ``min_delta`` margin,
    ``_is_better``, the thresholds' ``_reaches`` and ``_worse_than``), so a
    subclass never re-derives "min" from "max"; ``_monitor_value(logs)``
    reads the value, or says that it is missing.

    Args:
        monitor: the quantity in the logs. Defaults to ``"val_loss"``.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (from the name:
            loss/error-like is minimised, accuracy/AUC/F1-like maximised;
            else from the model's metric; else a ``ValueError`` asks for
            ``mode``). Defaults to ``"auto"``.
        min_delta: how much better a value must be to count as an
            improvement, ``>= 0``. Defaults to 0.
        min_delta_mode: ``"abs"``: better by ``min_delta``; ``"rel"``: better
            by the fraction ``min_delta`` of the reference. Defaults to
            ``"abs"``.
        on_missing: ``"raise"``: a ``MissingMonitorError`` naming the
            missing key and the keys present; ``"warn"``: warn once and skip
            the epoch. Defaults to ``"raise"``.
        tie_breaker: a second logged key that decides between equal
            monitored values, in its own direction (``"val_loss"`` for a
            ``"val_accuracy"`` monitor: of two epochs with the same accuracy
            the one with the lower loss is better). Defaults to None.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto",
                 min_delta: float = 0.0, min_delta_mode: str = "abs",
                 on_missing: str = "raise", tie_breaker: str | None = None):
        super().__init__()
        if tie_breaker is not None and (not isinstance(tie_breaker, str)
                                        or monitor_direction(tie_breaker) is None):
            raise ValueError(
                f"`tie_breaker` must be None or a loss-, error- or accuracy-like metric "
                f"name (its direction is read from the name), got {tie_breaker!r}.")
        self.tie_breaker = tie_breaker
        self._tie: float | None = None
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"`monitor` must be a non-empty metric name, got {monitor!r}.")
        self.monitor = monitor
        self.mode = check_choice("mode", mode, ("auto", "min", "max"))
        self.min_delta = float(check_non_negative("min_delta", min_delta))
        self.min_delta_mode = check_choice("min_delta_mode", min_delta_mode, ("abs", "rel"))
        self.on_missing = check_choice("on_missing", on_missing, ("raise", "warn"))
        self._resolved_mode = None if mode == "auto" else mode
        if self._resolved_mode is None:
            self._resolved_mode = monitor_direction(monitor)
        self._warned_missing = False

    @property
    def direction(self) -> str:
        """``"min"`` or ``"max"``; raises a ``ValueError`` asking for ``mode``
        when neither the name nor the model's metric tells."""
        if self._resolved_mode is None:
            self._resolved_mode = monitor_direction(self.monitor, private.callback_model(self))
        if self._resolved_mode is None:
            raise ValueError(
                f"{type(self).__name__} cannot tell whether monitor={self.monitor!r} "
                "should be minimised or maximised; pass mode='min' or mode='max'."
            )
        return self._resolved_mode

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # "auto" from the name or the model's metric where it can; otherwise
        # the first epoch end tells, as Keras does: a missing key first (with
        # the closest one present), then a direction that needs `mode`.
        if self._resolved_mode is None:
            self._resolved_mode = monitor_direction(self.monitor, private.callback_model(self))

    # Comparisons in the metric's direction: the only code that knows "min"
    # from "max" and how min_delta turns into a margin, so that no subclass
    # re-derives either.

    def _is_better(self, value: float, reference: float | None) -> bool:
        """Plain comparison, no margin (for tracking the best value): a
        finite ``value`` beats ``None``."""
        if reference is None:
            return math.isfinite(value)
        return value < reference if self.direction == "min" else value > reference

    def _margin(self, reference: float) -> float:
        """``min_delta`` in the metric's units: as given (``"abs"``), or the
        fraction ``min_delta`` of ``|reference|`` (``"rel"``)."""
        if self.min_delta_mode == "rel":
            return self.min_delta * abs(reference)
        return self.min_delta

    def _bar(self, reference: float, margin: float) -> float:
        """What a value must beat: ``reference`` moved by ``margin`` towards
        better."""
        return reference - margin if self.direction == "min" else reference + margin

    def _improves(self, value: float, reference: float | None) -> bool:
        """Whether ``value`` beats ``reference`` by the required margin."""
        if not math.isfinite(value):
            return False
        if reference is None:
            return True
        return self._is_better(value, self._bar(reference, self._margin(reference)))

    @property
    def _tie_direction(self) -> str | None:
        return monitor_direction(self.tie_breaker)

    def _tie_wins(self, value: float, reference: float | None,
                  reference_tie: float | None) -> bool:
        """Whether ``value`` equals ``reference`` and this epoch's
        ``tie_breaker`` value beats ``reference_tie``."""
        if (self.tie_breaker is None or reference is None or value != reference
                or self._tie is None or reference_tie is None
                or not math.isfinite(self._tie)):
            return False
        if self._tie_direction == "min":
            return self._tie < reference_tie
        return self._tie > reference_tie

    def _reaches(self, value: float, threshold: float) -> bool:
        """Whether ``value`` is at least as good as ``threshold``."""
        return not self._is_better(threshold, value)

    def _worse_than(self, value: float, threshold: float) -> bool:
        """Whether ``value`` is strictly worse than ``threshold``."""
        return self._is_better(threshold, value)

    def _gain(self, change: float) -> float:
        """A change of the monitored value, signed so that positive is better."""
        return -change if self.direction == "min" else change

    @property
    def _better_side(self) -> str:
        """Where better values lie, in words: ``"below"`` or ``"above"``."""
        return "below" if self.direction == "min" else "above"

    def _monitor_value(self, logs) -> float | None:
        """The monitored value as a float, or ``None`` after a warning."""
        logs = logs or {}
        tie = logs.get(self.tie_breaker) if self.tie_breaker is not None else None
        self._tie = None if tie is None else log_scalar(self.tie_breaker, tie,
                                                        type(self).__name__)
        if self.monitor not in logs:
            message = missing_monitor_message(type(self).__name__, self.monitor, logs)
            if self.on_missing == "raise":
                raise MissingMonitorError(message)
            if not self._warned_missing:
                warnings.warn(message, stacklevel=2)
                self._warned_missing = True
            return None
        return log_scalar(self.monitor, logs[self.monitor], type(self).__name__)
