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
    in-memory snapshot (NumPy copies) of the model's weights AND the
    optimizer's variables (step counter and slots such as Adam's moments;
    the optimizer is built at train begin if it was not yet, exactly as its
    first step would build it). When the monitored loss is non-finite, or
    above ``spike_factor`` times the reference (only while the reference is
    positive), or when the epoch ends with a non-finite weight or optimizer
    variable although the loss the epoch logged looks fine (the last step's
    update, or a NaN that some CPUs' ``relu`` turns into 0, can do that),
    the guard rolls back: it restores the snapshot,
    multiplies the learning rate by ``factor`` (through the ``factor`` of
    the optimizer's :class:`~kerastune_kit.schedules.ControlledSchedule`,
    which is not among the optimizer's own variables it restores, so the
    cut survives the restore and composes with :class:`TimeBasedLR` and
    :class:`CurveBasedLR`) and training goes on.

    The reference is the best epoch value seen so far; before the first
    epoch has ended it is the loss of the run's first execution, so a run
    that blows up (but stays finite) in its first epoch is caught too.

    After ``max_retries`` rollbacks, the next divergence restores the last
    good state, stops training (``model.stop_training``) and warns with a
    clear message. At train end the weights are checked once more and
    restored if any is non-finite (e.g. another callback stopped training
    mid-epoch), so the model never ends with non-finite weights.

    * ``check="epoch"`` (default) judges the epoch's mean loss at epoch end.
      Per batch it only notes the first execution's loss, and it lets
      Keras dispatch batch ends asynchronously where the backend does.
    * ``check="batch"`` also judges the logs Keras hands to each
      ``on_train_batch_end`` (one per execution of ``steps_per_execution``
      steps; Keras 3 reports the running mean of the epoch so far). It reads
      only those logs, which Keras has already converted to Python numbers;
      it reads no variable, so it adds no host sync (it does make the
      batch-end dispatch synchronous, because a rollback must happen before
      the next execution). Spikes are still measured against the reference
      above, not against the best batch, so one lucky batch cannot make a
      normal one look like a spike. After a batch rollback the epoch's
      metrics are reset before the next batch, so the epoch's logged mean
      covers only the steps after the rollback; if the rollback came in the
      epoch's last execution, the epoch's logs keep the diverged value and
      the epoch is not judged again.

    Snapshots are taken only at epoch ends (and train begin): copying every
    weight at every batch would be a host sync per batch.

    Every decision is appended to :attr:`events`: ``kind="rollback"`` with
    ``epoch``, ``batch`` (``None`` for an epoch check), ``value``, ``best``,
    ``old_lr`` and ``new_lr`` (the rate of the next step, at the restored
    position, before and after the cut), ``retry`` and ``reason``
    (``"non-finite"``, ``"spike"`` or ``"non-finite weights"``);
    ``kind="stop"`` when the retries are spent; ``kind="restore"`` for the
    train-end check.

    It is a :class:`~kerastune_kit.callbacks.MonitorCallback` of a
    minimised quantity: a ``monitor`` the fit cannot log is reported at
    train begin with the closest key, a missing one at the epoch end.

    Args:
        monitor: the training loss in the logs. Defaults to ``"loss"``.
        spike_factor: a value above ``spike_factor`` times the reference
            (the best epoch value) is a spike, ``> 1``. Defaults to 4.0.
        factor: the multiplier of the rate at each rollback, in (0, 1).
            Defaults to 0.5.
        max_retries: rollbacks allowed before stopping, an integer ``>= 0``.
            Defaults to 3.
        check: ``"epoch"`` (default) or ``"batch"``.
        verbose: 1 prints each rollback. Defaults to 0.

    Example:

    ```python
    from kerastune_kit.callbacks import DivergenceGuard
    guard = DivergenceGuard(spike_factor=4.0, factor=0.5, max_retries=3)
    model.fit(x, y, epochs=20, callbacks=[guard])
    [(e["kind"], e["epoch"], e["reason"]) for e in guard.events]
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

        Call it after putting the model back to an earlier state yourself
        (say, the best validation epoch): that state's training loss may be
        far above the best loss seen since, which is no divergence.
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
