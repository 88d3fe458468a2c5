"""Learning rate cut by the shape of the monitored curve."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kerastune_kit._args.validation import (
    check_choice,
    check_int,
    check_non_negative,
    check_number,
    check_verbose,
)
from kerastune_kit.callbacks import _lr_control
from kerastune_kit.callbacks.monitor_callback import MonitorCallback

_RULES = ("plateau", "slope")
# A rate within this relative distance of `min_lr` counts as being at it:
# the factor variable is float32, so a clamped rate is min_lr up to rounding.
_AT_FLOOR = 1e-6


class CurveBasedLR(MonitorCallback):
    """Cuts the learning rate when the monitored curve stops improving.

    Two rules decide when to cut; both judge the (optionally EMA-smoothed)
    monitored value at each epoch end:

    * ``rule="plateau"``: the value counts as an improvement when it beats the
      best so far by ``min_delta`` (relative: ``current < best * (1 -
      min_delta)`` for a minimised metric; absolute: ``current < best -
      min_delta``). After ``patience`` epochs in a row without improvement
      the rate is multiplied by ``factor`` (``patience=0`` and ``1`` both cut
      at the first epoch without improvement). Non-finite values never
      improve.
    * ``rule="slope"``: a least-squares line is fitted to the last ``window``
      values of the curve. Its improvement per epoch (the slope, signed so
      that positive is better) is compared with ``min_delta`` times the
      absolute fitted level at the newest epoch (``min_delta_mode="rel"``) or
      with ``min_delta`` itself (``"abs"``). An epoch whose fitted
      improvement is below that threshold is a *flat* epoch; after
      ``patience`` flat epochs in a row (``0`` and ``1`` both mean one) the
      rate is cut. The rule reacts to the trend of several epochs, not to one
      noisy value. No decision is taken before the window is full, and a
      cut empties the window, so the next decision needs ``window`` new
      epochs: one trend is never cut twice. A non-finite value counts as a
      flat epoch and is kept out of the window and the EMA.

    With ``smoothing > 0`` the curve is ``ema = smoothing * ema + (1 -
    smoothing) * value``, starting at the first value (so it has no bias
    towards zero); both rules then judge the EMA. The EMA survives cuts.

    ``cooldown`` means what it means for Keras's ``ReduceLROnPlateau``: each
    epoch end after a cut counts it down by one, and the epoch that brings it
    to 0 decides again, so after a cut the next ``cooldown - 1`` epochs take
    no decision (``cooldown=1`` is the same as 0) and the next cut comes at
    the earliest ``max(patience, 1) + max(cooldown - 1, 0)`` epochs later.
    Epochs in cooldown still update the best and fill the slope window. The
    rate never goes below ``min_lr``; a cut that would not lower it is not
    taken and not recorded.

    Cuts multiply the ``factor`` of the optimizer's
    :class:`~kerastune_kit.schedules.ControlledSchedule`, so they work with a
    float learning rate, together with :class:`TimeBasedLR` (the schedule
    keeps its shape and is scaled), and with an optimizer built directly with
    a Keras ``LearningRateSchedule`` (wrapped, never the Keras "not settable"
    ``TypeError``).

    Each epoch's logs get ``learning_rate``: the rate in effect at the end of
    that epoch, before any cut decided at it. Every cut is appended to
    :attr:`events` as a dict with ``epoch`` (0-based), ``old_lr``,
    ``new_lr``, ``rule``, ``value`` (the monitored value, unsmoothed),
    ``reason`` (``"plateau"`` or ``"slope"``), ``callback`` and ``kind``
    (``"lr_cut"``); slope cuts also carry ``improvement`` (fitted
    improvement per epoch) and ``level`` (fitted level). :meth:`get_state`
    and :meth:`set_state` carry the counters, the window, the EMA and the
    events, so a resumed run decides exactly like an uninterrupted one.

    ``CurveBasedLR(rule="plateau", min_delta_mode="abs")`` with Keras's
    values takes Keras's decisions: the same rate after every epoch (tested
    against Keras's own callback). Where it differs from
    ``keras.callbacks.ReduceLROnPlateau`` (Keras 3.15):

    ====================  ================================  ==============================
    What                  Keras                             kit
    ====================  ================================  ==============================
    defaults              ``factor=0.1``, ``patience=10``,  ``factor=0.5``, ``patience=3``,
                          ``min_delta=1e-4`` absolute       ``min_delta=1e-4`` relative
                                                            (``min_delta_mode="rel"``)
    a schedule as rate    ``TypeError``: the rate is not    the cut scales the schedule
                          settable
    with ``TimeBasedLR``  its float replaces the            the cut scales the schedule,
                          schedule's rate                   which keeps its shape
    ``monitor`` missing   warns at each epoch end           ``MissingMonitorError`` (see
                                                            ``EarlyStopping``);
                                                            ``on_missing="warn"``: Keras's
    ``mode="auto"``       the metric's direction, at the    the name, then the metric, at
                          first epoch end                   train begin
    bad arguments         ``factor >= 1`` raises; the rest  ``ValueError`` at construction
                          is not checked                    for every argument
    ``verbose=1`` prints  ``Epoch 5: ReduceLROnPlateau      ``Epoch 5: CurveBasedLR
                          reducing learning rate to         (plateau) cut the learning
                          0.01.``                           rate from 0.02 to 0.01.``
    several optimizers    each ``optimizer.optimizers``     one optimizer (a loss-scale
                          is cut                            wrapper's inner one)
    ====================  ================================  ==============================

    Args:
        monitor: the quantity in the logs. Defaults to ``"val_loss"``.
        mode: ``"auto"`` (default), ``"min"`` or ``"max"``. ``"auto"`` reads
            the direction from the name (loss/error-like: min;
            accuracy/AUC/precision/recall/F1-like: max) or from the model's
            Keras metric; otherwise training begins with a ``ValueError``
            asking for ``mode``.
        rule: ``"plateau"`` (default) or ``"slope"``.
        factor: the multiplier of each cut, in (0, 1). Defaults to 0.5.
        patience: epochs without improvement (plateau) or flat epochs in a
            row (slope) before a cut, ``>= 0``. Defaults to 3.
        min_delta: the required improvement, ``>= 0``. Defaults to 1e-4.
        min_delta_mode: ``"rel"`` (default): a fraction of the best value
            (plateau) or of the fitted level (slope); ``"abs"``: in the
            metric's units (per epoch for the slope rule).
        cooldown: epochs after a cut without decisions, ``>= 0``. Defaults
            to 0.
        min_lr: the floor of the rate, ``>= 0``. Defaults to 0.
        window: epochs in the slope fit, ``>= 2``. Defaults to 5.
        smoothing: EMA coefficient in [0, 1); 0 (default) judges raw values.
        on_missing: ``"raise"`` (default): a :class:`MissingMonitorError`
            naming the missing key, the keys present and the closest (at
            train begin when every key the fit can log is known, else at the
            epoch end); ``"warn"``: warn once and skip such epochs.
        verbose: 1 prints each cut. Defaults to 0.
        rollback_to: an :class:`EarlyStopping` with
            ``restore_best_weights=True`` (placed before this callback): at
            each cut the model goes back to its best epoch's weights, so the
            lower rate refines the best state rather than the last one.
            Defaults to None (no rollback).
        tie_breaker: a second logged key that decides between equal values
            of ``monitor`` (plateau rule), as in :class:`EarlyStopping`.
            Defaults to None.

    Example:

    ```python
    from kerastune_kit.callbacks import CurveBasedLR, TimeBasedLR
    from kerastune_kit.schedules import CosineDecay
    cut = CurveBasedLR(rule="slope", window=4, patience=1, factor=0.5)
    history = model.fit(x, y, validation_split=0.2, epochs=30,
                        callbacks=[TimeBasedLR(CosineDecay(1e-2, 3000)), cut])
    history.history["learning_rate"]  # the rate of each epoch
    [(e["epoch"], e["old_lr"], e["new_lr"]) for e in cut.events]
    ```
    """

    _state_attributes = ("best", "best_tie", "wait", "cooldown_counter", "window_values", "ema",
                         "events")
    _key_arguments = ("monitor", "rule")

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", rule: str = "plateau",
                 factor: float = 0.5, patience: int = 3, min_delta: float = 1e-4,
                 min_delta_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                 window: int = 5, smoothing: float = 0.0, on_missing: str = "raise",
                 verbose: int = 0, rollback_to=None, tie_breaker: str | None = None):
        super().__init__(monitor=monitor, mode=mode, min_delta=min_delta,
                         min_delta_mode=min_delta_mode, on_missing=on_missing,
                         tie_breaker=tie_breaker)
        self.rule = check_choice("rule", rule, _RULES)
        self.factor = float(check_number("factor", factor, low=0.0, high=1.0,
                                         low_open=True, high_open=True))
        self.patience = check_int("patience", patience, minimum=0)
        self.cooldown = check_int("cooldown", cooldown, minimum=0)
        self.min_lr = float(check_non_negative("min_lr", min_lr))
        self.window = check_int("window", window, minimum=2)
        self.smoothing = float(check_number("smoothing", smoothing, low=0.0, high=1.0,
                                            high_open=True))
        self.verbose = check_verbose(verbose)
        if rollback_to is not None and not getattr(rollback_to, "restore_best_weights", False):
            raise ValueError(
                f"`rollback_to` must be an EarlyStopping with restore_best_weights=True, "
                f"got {rollback_to!r}.")
        self.rollback_to = rollback_to
        self._reset_tracking()

    def _reset_tracking(self) -> None:
        self.best: float | None = None
        self.best_tie: float | None = None
        self.wait = 0
        self.cooldown_counter = 0
        self.window_values: list[float] = []
        self.ema: float | None = None

    # State ------------------------------------------------------------------

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.window_values = [float(v) for v in self.window_values]

    # Hooks ------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # Installed now, before the first step is traced, rather than at the
        # first cut (which would retrace the train function mid-run).
        _lr_control.controlled_schedule(self.model)

    def on_epoch_end(self, epoch, logs=None):
        _lr_control.record_learning_rate(self.model, logs)
        value = self._monitor_value(logs)
        if value is None:
            return
        finite = math.isfinite(value)
        if finite:
            self.ema = value if self.ema is None or self.smoothing == 0 else (
                self.smoothing * self.ema + (1.0 - self.smoothing) * value)
        # Keras's ReduceLROnPlateau order: the epoch that counts the cooldown
        # down to 0 already decides (the same `cooldown` means the same here).
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        in_cooldown = self.cooldown_counter > 0
        if self.rule == "plateau":
            self._plateau(epoch, value, finite, in_cooldown)
        else:
            self._slope(epoch, value, finite, in_cooldown)

    # Rules ------------------------------------------------------------------

    def _plateau(self, epoch, value, finite, in_cooldown):
        judged = self.ema if finite else value
        if finite and (self._improves(judged, self.best)
                       or self._tie_wins(judged, self.best, self.best_tie)):
            self.best, self.best_tie = judged, self._tie
            self.wait = 0
            return
        if in_cooldown:
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self._cut(epoch, value, "plateau", best=self.best, wait=self.wait)

    def _slope(self, epoch, value, finite, in_cooldown):
        if finite:
            self.window_values = (self.window_values + [self.ema])[-self.window:]
        if in_cooldown:
            return
        if finite and len(self.window_values) < self.window:
            return
        improvement, level = self._fitted_trend() if finite else (math.nan, math.nan)
        if finite and improvement >= self._margin(level):
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self._cut(epoch, value, "slope", improvement=improvement, level=level)

    def _fitted_trend(self) -> tuple[float, float]:
        """(improvement per epoch, fitted level at the newest epoch)."""
        y = np.asarray(self.window_values, dtype=np.float64)
        t = np.arange(len(y), dtype=np.float64)
        slope, intercept = np.polyfit(t, y, 1)
        level = intercept + slope * t[-1]
        return float(self._gain(slope)), float(level)

    # The cut ----------------------------------------------------------------

    def _cut(self, epoch, value, reason, **fields):
        self.wait = 0
        self.cooldown_counter = self.cooldown
        self.window_values = []
        old_lr = _lr_control.current_learning_rate(self.model)
        if old_lr <= self.min_lr * (1.0 + _AT_FLOOR):
            return
        old_lr, new_lr = _lr_control.scale_learning_rate(self.model, self.factor, self.min_lr)
        if new_lr >= old_lr * (1.0 - _AT_FLOOR):
            return
        if self.rollback_to is not None and self.rollback_to.restore_best() is not None:
            fields["rolled_back_to"] = self.rollback_to.best_epoch
        self.record_event("lr_cut", epoch, reason, old_lr=old_lr, new_lr=new_lr,
                          rule=self.rule, value=value, **fields)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: CurveBasedLR ({reason}) cut the learning rate "
                  f"from {old_lr:.4g} to {new_lr:.4g}.")
