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

    At each epoch end one of two rules judges the monitored value (its EMA
    with ``smoothing > 0``):

    * ``rule="plateau"``, as Keras's ``ReduceLROnPlateau``: a value that
      beats the best so far by ``min_delta`` is an improvement; after
      ``patience`` epochs in a row without one the rate is multiplied by
      ``factor``.
    * ``rule="slope"``: a least-squares line is fitted to the last
      ``window`` values. An epoch whose fitted improvement per epoch is
      below ``min_delta`` times the fitted level (``min_delta_mode="rel"``)
      or below ``min_delta`` (``"abs"``) is flat; after ``patience`` flat
      epochs in a row the rate is cut. No decision is taken until the
      window is full, and a cut empties it. A non-finite value counts as a
      flat epoch, even then, and stays out of the window and the EMA.

    A cut multiplies the ``factor`` of the optimizer's ``ControlledSchedule``,
    so it works with a float rate, a Keras schedule as the rate, and
    ``TimeBasedLR``, whose schedule keeps its shape, scaled. Each epoch's
    logs get ``learning_rate`` (the rate at the epoch's end, before any cut
    decided there); each cut is in ``events`` (``kind="lr_cut"``, ``epoch``
    (0-based), ``old_lr``, ``new_lr``, ``value``, ``reason``). With Keras's
    values and ``min_delta_mode="abs"`` the plateau rule takes Keras's
    decisions. See ``docs/curve_control.md``.

    Args:
        monitor: the quantity in the logs. Defaults to ``"val_loss"``.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (from the name, else the
            model's metric). Defaults to ``"auto"``.
        rule: ``"plateau"`` or ``"slope"``. Defaults to ``"plateau"``.
        factor: the multiplier of each cut, in (0, 1). Defaults to 0.5.
        patience: epochs without improvement (plateau) or flat epochs in a
            row (slope) before a cut, ``>= 0`` (0 acts as 1). Defaults to 3.
        min_delta: the required improvement, ``>= 0``. Defaults to 1e-4.
        min_delta_mode: ``"rel"``: a fraction of the best value (plateau)
            or of the fitted level (slope); ``"abs"``: in the metric's units
            (per epoch for the slope rule). Defaults to ``"rel"``.
        cooldown: after a cut, ``cooldown - 1`` epochs take no decision,
            ``>= 0``. Defaults to 0.
        min_lr: the floor of the rate, ``>= 0``; a cut that would not lower
            the rate is not taken. Defaults to 0.
        window: epochs in the slope fit, ``>= 2``. Defaults to 5.
        smoothing: ``s`` in [0, 1): the rules judge ``ema = s * ema + (1 -
            s) * value``. Defaults to 0 (the raw values).
        on_missing: ``"raise"`` or ``"warn"`` (warn once, skip the epoch)
            when ``monitor`` is not in the logs. Defaults to ``"raise"``.
        verbose: 1 prints each cut. Defaults to 0.
        rollback_to: an ``EarlyStopping`` with ``restore_best_weights=True``,
            placed before this callback: at each cut the model goes back to
            its best epoch's weights. Defaults to None (no rollback).
        tie_breaker: a second logged key that decides between equal values
            (plateau rule), as in ``EarlyStopping``. Defaults to None.

    Raises:
        ValueError: for a bad argument (named in the message); in ``fit``,
            when ``mode="auto"`` cannot tell the direction.
        MissingMonitorError: in ``fit``, when an epoch's logs lack
            ``monitor`` (with ``on_missing="raise"``).

    Example:

    ```python
    from kerastune_kit.callbacks import CurveBasedLR, TimeBasedLR
    from kerastune_kit.schedules import CosineDecay

    cut = CurveBasedLR(rule="slope", window=4, patience=1, factor=0.5)
    history = model.fit(x, y, validation_data=(xv, yv), epochs=30, verbose=0,
                        callbacks=[TimeBasedLR(CosineDecay(1e-2, 3000)), cut])
    print(history.history["learning_rate"][-1])  # the last epoch's rate
    print([(e["epoch"], e["old_lr"], e["new_lr"]) for e in cut.events])
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
