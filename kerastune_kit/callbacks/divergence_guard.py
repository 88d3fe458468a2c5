"""Rolls training back to the last good state when the loss diverges."""

from __future__ import annotations

import math
import warnings

from kerastune_kit._args.validation import check_choice, check_int, check_number, check_verbose
from kerastune_kit._model_state.snapshot import Snapshot, on_weights_replaced, weights_finite
from kerastune_kit.callbacks import _lr_control
from kerastune_kit.callbacks.monitor_callback import MonitorCallback


class DivergenceGuard(MonitorCallback):
    """Undoes a divergence: restores the last good state and cuts the rate.

    At train begin and at the end of every good epoch the guard keeps an
    in-memory snapshot of the model's weights and the optimizer's variables.
    When the monitored loss is non-finite, or above ``spike_factor`` times
    the reference (the best epoch value so far; before the first epoch
    ends, the loss of the first execution), or when an epoch ends with a
    non-finite weight or optimizer variable, the guard rolls back: it
    restores the snapshot, multiplies the learning rate by ``factor`` and
    training goes on. The cut goes into the ``factor`` of the optimizer's
    ``ControlledSchedule``, which the restore leaves alone, so it composes
    with ``TimeBasedLR`` and ``CurveBasedLR``. After ``max_retries``
    rollbacks the next divergence restores the last good state, stops
    training and warns. At train end non-finite weights are replaced by the
    last good state, so the model never ends with them.

    ``check="epoch"`` judges the epoch's mean loss at epoch end.
    ``check="batch"`` also judges the logs of each ``on_train_batch_end``
    (one per execution of ``steps_per_execution`` steps, the epoch's running
    mean), without a host sync; after a batch rollback the epoch's metrics
    are reset. Snapshots are taken at epoch ends only. Each decision is in
    ``events``: ``kind="rollback"`` (with ``epoch``, ``batch``, ``value``,
    ``old_lr``, ``new_lr``, ``retry``, and ``reason``: ``"non-finite"``,
    ``"spike"`` or ``"non-finite weights"``), ``"stop"`` and ``"restore"``.
    See ``docs/curve_control.md``.

    Args:
        monitor: the training loss in the logs, minimised. Defaults to
            ``"loss"``.
        spike_factor: a value above ``spike_factor`` times the reference is
            a spike, ``> 1``. Defaults to 4.0.
        factor: the multiplier of the rate at each rollback, in (0, 1).
            Defaults to 0.5.
        max_retries: rollbacks allowed before stopping, an integer ``>= 0``.
            Defaults to 3.
        check: ``"epoch"`` or ``"batch"`` (then ``monitor`` must be a
            training metric, not ``val_...``). Defaults to ``"epoch"``.
        verbose: 1 prints each rollback. Defaults to 0.

    Raises:
        ValueError: for a bad argument (named in the message).
        MissingMonitorError: in ``fit``, when an epoch's logs lack
            ``monitor``.

    Example:

    ```python
    from kerastune_kit.callbacks import DivergenceGuard

    guard = DivergenceGuard(spike_factor=4.0, factor=0.5, max_retries=3)
    model.fit(x, y, epochs=20, callbacks=[guard], verbose=0)
    print([(e["kind"], e["epoch"], e["reason"]) for e in guard.events])
    print(guard.stop_reason)  # None, or "nonfinite"/"divergence" if it stopped
    ```

    Attributes:
        stop_reason: once it stopped training, ``"nonfinite"`` (a NaN or
            infinite loss or weights) or ``"divergence"`` (spikes); else None.
    """

    _state_attributes = ("best", "retries", "events")
    _key_arguments = ("monitor",)

    def __init__(self, monitor: str = "loss", spike_factor: float = 4.0, factor: float = 0.5,
                 max_retries: int = 3, check: str = "epoch", verbose: int = 0):
        # A loss: minimised, positive (spikes are ratios to the reference).
        super().__init__(monitor, mode="min")
        self.spike_factor = float(check_number("spike_factor", spike_factor, low=1.0,
                                               low_open=True))
        self.factor = float(check_number("factor", factor, low=0.0, high=1.0,
                                         low_open=True, high_open=True))
        if isinstance(max_retries, float):
            raise ValueError(f"`max_retries` must be an integer >= 0, got {max_retries!r}.")
        self.max_retries = check_int("max_retries", max_retries, minimum=0)
        self.check = check_choice("check", check, ("epoch", "batch"))
        if check == "batch" and monitor.startswith("val_"):
            raise ValueError(
                f"`monitor` must be a training metric with check='batch' (batch logs "
                f"have no validation values), got {monitor!r}.")
        self.verbose = check_verbose(verbose)
        # Epoch checks only note the first execution's loss, so Keras may keep
        # dispatching batch ends asynchronously; batch checks must run before
        # the next execution.
        self.async_safe = check == "epoch"
        self.best: float | None = None
        self.retries = 0
        self.stopped = False
        self.stop_reason: str | None = None
        self._first_loss: float | None = None
        self._snapshot: Snapshot | None = None
        self._reset_pending = False
        self._epoch = 0

    # Hooks ------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        _lr_control.controlled_schedule(self.model)
        self.stopped = False
        self.stop_reason = None
        self._reset_pending = False
        self._first_loss = None
        self._snapshot = Snapshot(self.model)
        # A rollback of another callback (to the best epoch) is no divergence.
        on_weights_replaced(self.model, "DivergenceGuard", self.rebase)

    def _reset_tracking(self) -> None:
        self.best = None
        self.retries = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._reset_pending:
            # The running means still hold the diverged steps.
            self.model.reset_metrics()
            self._reset_pending = False

    def on_train_batch_end(self, batch, logs=None):
        if self._first_loss is None:
            # A validation metric is not in batch logs: then no reference
            # until the first epoch ends (a typo is reported there).
            first = (logs or {}).get(self.monitor)
            first = math.inf if first is None else float(first)
            self._first_loss = first if math.isfinite(first) else math.inf
        if self.check != "batch" or self.stopped:
            return
        value = self._monitor_value(logs)  # on_missing="raise": never None
        reason = self._verdict(value)
        if reason is not None:
            self._diverged(self._epoch, batch, value, reason)
            self._reset_pending = not self.stopped

    def rebase(self) -> None:
        """Takes the model's current state as the last good one, and measures
        spikes afresh from the next epoch on.

        Call it after putting the model back to an earlier state yourself;
        during a fit, ``EarlyStopping.restore_best()`` (and so
        ``CurveBasedLR``'s rollback) calls it for you.
        """
        self._snapshot = Snapshot(self.model)
        self.best = None
        self._first_loss = None
        self._rebased = True

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped:
            return
        if self.__dict__.pop("_rebased", False):
            return  # this epoch's loss belongs to the state before the rebase
        if self._reset_pending:
            # Rolled back at the epoch's last execution: the weights are the
            # good snapshot already, the logged mean is the diverged one.
            self._reset_pending = False
            return
        value = self._monitor_value(logs)  # on_missing="raise": never None
        reason = self._verdict(value)
        snapshot = None
        if reason is None:
            snapshot = Snapshot(self.model)
            # The weights can be poisoned while the logged loss is finite (the
            # epoch's last update came after it); no "last good" state.
            if not snapshot.is_finite():
                reason = "non-finite weights"
        if reason is not None:
            self._diverged(epoch, None, value, reason)
            return
        if self._is_better(value, self.best):
            self.best = value
        self._snapshot = snapshot

    def on_train_end(self, logs=None):
        if self._snapshot is not None and not weights_finite(self.model):
            self._snapshot.restore()
            self.record_event("restore", self._epoch, "non-finite weights at train end")
        self._snapshot = None
        on_weights_replaced(self.model, "DivergenceGuard", None)

    # Decisions --------------------------------------------------------------

    def _verdict(self, value: float) -> str | None:
        if not math.isfinite(value):
            return "non-finite"
        reference = self.best if self.best is not None else self._first_loss
        if reference is not None and 0 < reference < math.inf and (
                value > self.spike_factor * reference):
            return "spike"
        return None

    def _diverged(self, epoch, batch, value, reason):
        self._snapshot.restore()
        if self.retries >= self.max_retries:
            self.stopped = True
            self.stop_reason = "nonfinite" if reason.startswith("non-finite") else "divergence"
            self.model.stop_training = True
            self.record_event("stop", epoch, reason, batch=batch, value=value,
                              best=self.best, retries=self.retries)
            message = (
                f"DivergenceGuard: the {self.monitor!r} diverged ({reason}, value "
                f"{value:.4g}) in epoch {epoch + 1}"
                + ("" if batch is None else f", step {batch + 1}")
                + f" after {self.retries} rollback(s) (max_retries={self.max_retries}); "
                "restored the last good weights and stopped training."
            )
            warnings.warn(message, stacklevel=2)
            if self.verbose:
                print("\n" + message)
            return
        self.retries += 1
        old_lr, new_lr = _lr_control.scale_learning_rate(self.model, self.factor)
        self.record_event("rollback", epoch, reason, batch=batch, value=value, best=self.best,
                          old_lr=old_lr, new_lr=new_lr, retry=self.retries)
        if self.verbose:
            # 1-based, like Keras's progress bar (the events keep Keras's indices).
            where = f"epoch {epoch + 1}" + ("" if batch is None else f", step {batch + 1}")
            print(f"\nDivergenceGuard: {reason} {self.monitor}={value:.4g} at {where}; "
                  f"rolled back and cut the learning rate from {old_lr:.4g} to "
                  f"{new_lr:.4g} (retry {self.retries}/{self.max_retries}).")
