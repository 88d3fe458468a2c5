"""One call: the best model a compiled Keras model can become in a time budget."""

from __future__ import annotations

import contextlib
import gc
import math
import warnings
from collections.abc import Callable

import keras

from kerastune_kit._args.validation import (
    check_callbacks,
    check_choice,
    check_int,
    check_number,
    check_positive,
)
from kerastune_kit._files.atomic import check_suffix
from kerastune_kit._model_state import evaluated_weights as evaluated
from kerastune_kit._model_state import optimizer as _optimizer
from kerastune_kit.callbacks import (
    Budget,
    CurveBasedLR,
    DivergenceGuard,
    EarlyStopping,
    TimeBasedLR,
)
from kerastune_kit.callbacks.stop_reason import STOP_REASONS, stop_reason
from kerastune_kit.recipes import _inputs
from kerastune_kit.recipes._progress import BudgetProgress
from kerastune_kit.recipes.budgeted_result import BudgetedResult
from kerastune_kit.schedules import LinearDecay, Warmup
from kerastune_kit.tuning.lr_range_test import LRRangeTest

_LENGTH, _WARMUP = 1000, 50  # schedule positions: a warmup over the first 5%
_SEARCH_SHARE = 0.05         # of the budget, at most, for the LR range test
_SEARCH_RANGE = 10.0         # it spans [lr / 10, lr * 10] around the optimizer's rate
_PEAK_CLIP = 3.0             # and overrides that rate only when off by more than this
_VALIDATIONS = 100           # at most, over the budget
_VALIDATION_SHARE = 0.2      # of the time, at most
_PATIENCE = 0.1             # of the validations the budget allows, without a new best: a cut
_NO_STOP = 2**31 - 1         # EarlyStopping keeps the best; the budget ends training


def fit_budgeted(model, x, y=None, *, budget_seconds: float, validation_data=None,
                 validation_split: float = 0.0, batch_size: int = 32, sample_weight=None,
                 monitor: str | None = None, mode: str = "auto",
                 best_model_path: str | None = None, callbacks=None, verbose="auto",
                 trainer=None, clock: Callable[[], float] | None = None) -> BudgetedResult:
    """Trains a compiled model for a wall-clock budget and keeps its best epoch.

    The rate warms up and decays linearly to zero at the end of the budget,
    peaking at the optimizer's rate (or at what a short LR range test finds,
    when that is more than 3x off). Every epoch is validated; the best one
    is kept, and training goes back to it with half the rate when the
    validation curve stalls. Training runs until the budget is spent (or
    the loss is no longer finite); all wall-clock time counts, compiling
    included. The model ends on the best epoch's weights, with its
    optimizer's rate and ``steps_per_execution`` given back. The parts, the
    reasons and the measurements: ``docs/budgeted_recipe.md``.

    Args:
        model: a compiled ``keras.Model`` (with ``trainer``: its model).
        x: training inputs: arrays (or a dict/list of arrays), or a
            ``tf.data.Dataset`` of ``(x, y)`` batches.
        y: targets for array inputs. Defaults to None.
        budget_seconds: the wall-clock budget in seconds, ``> 0``.
        validation_data: ``(x_val, y_val)``, ``(x_val, y_val, weights)`` or a
            dataset. Give this or ``validation_split``. Defaults to None.
        validation_split: the fraction of array inputs (their end) kept for
            validation, in ``[0, 1)``. Defaults to 0.
        batch_size: for array inputs, ``>= 1``. Defaults to 32.
        sample_weight: per-sample weights of array inputs. Defaults to None.
        monitor: the validation metric that picks the best epoch, as Keras
            logs it (``"val_auc"``). Defaults to None: the first accuracy
            the model logs, else ``"val_loss"``.
        mode: ``"auto"``, ``"min"`` or ``"max"``. Defaults to ``"auto"``.
        best_model_path: also write the best model there (``.keras`` or
            ``.weights.h5``), atomically. Defaults to None.
        callbacks: more Keras or kit callbacks. Defaults to None.
        verbose: 0, 1, 2 or ``"auto"`` (1): a line per epoch with the
            seconds spent, then the result's summary. Defaults to ``"auto"``.
        trainer: a :class:`~kerastune_kit.Trainer` to train with instead of
            ``model.fit``. Defaults to None.
        clock: a function returning seconds. Defaults to None (monotonic).

    Returns:
        A :class:`~kerastune_kit.BudgetedResult`.

    Raises:
        ValueError: for bad inputs (lengths, NaN in arrays, a monitor that
            validation does not log), before anything trains.

    Example:

    ```python
    import kerastune_kit
    result = kerastune_kit.fit_budgeted(model, x, y, budget_seconds=10,
                                        validation_split=0.2, verbose=0)
    print(result.summary())   # peak rate, epochs, cuts, best epoch, stop, seconds
    ```
    """
    budget = Budget(check_positive("budget_seconds", budget_seconds), clock)
    budget.start()
    # Earlier fits' input pipelines (see _inputs._untuned) are freed now, on
    # the budget, not by a collection inside this call's first step.
    gc.collect()
    model = _check_model(model, trainer)
    fraction = float(check_number("validation_split", validation_split, low=0.0, high=1.0,
                                  high_open=True))
    batch_size = check_int("batch_size", batch_size, minimum=1)
    verbose = check_choice("verbose", verbose, ("auto", 0, 1, 2))
    mode = check_choice("mode", mode, ("auto", "min", "max"))
    if best_model_path is not None:
        best_model_path = check_suffix("best_model_path", best_model_path,
                                       (".keras", ".weights.h5"))
    extra = check_callbacks(callbacks)
    evaluated.check_no_keras_swap(model, extra, "fit_budgeted")
    rate = _optimizer.current_learning_rate(model)
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(
            f"fit_budgeted needs the optimizer's learning rate as its prior, a finite "
            f"number > 0; this optimizer's is {rate!r}.")
    x, y, sample_weight, validation_data = _inputs.checked(
        x, y, sample_weight, validation_data, fraction)

    timed = TimeBasedLR(Warmup(LinearDecay(1.0, _LENGTH - _WARMUP), _WARMUP), unit="second",
                        budget_seconds=budget)
    with _optimizer.borrowed_learning_rate(model), _more_steps_per_execution(
            model, trainer, x, batch_size) as per_execution:
        timed.install(model)  # before anything compiles: one train function serves all
        feed, stream = _inputs.feed(x, y, sample_weight, batch_size, per_execution)
        validation_data = _inputs.validation_feed(validation_data, max(batch_size, 256))
        validate = _evaluator(model, trainer, validation_data, batch_size)
        logs, validation_seconds = validate(), _timed(validate, budget.clock)
        monitor, mode = _inputs.resolve_monitor(model, logs, monitor, mode, "fit_budgeted")
        budget.boundaries.append(validation_seconds)  # priced before fit measures one

        search = LRRangeTest(rate / _SEARCH_RANGE, rate * _SEARCH_RANGE, smoothing=0.8,
                             hold_position=_WARMUP, budget=budget,
                             seconds=_SEARCH_SHARE * budget.seconds)
        natural = _inputs.steps_per_epoch(x, batch_size)
        _fit(model, trainer, epochs=10**6, callbacks=[search], verbose=0, **feed,
             steps_per_epoch=natural if stream else None)
        learning_rate = _choose_peak(search, rate)

        steps = _epoch_steps(budget, validation_seconds, natural, per_execution, stream)
        patience = _patience(budget, validation_seconds, steps or natural)
        timed.factor = learning_rate["peak"]
        # Of two epochs with the same accuracy the better converged one wins.
        tie = "val_loss" if monitor != "val_loss" and "loss" in logs else None
        # No stop by patience: one cut the final decay short, on a best epoch that
        # was a spike of the validation noise (docs/budgeted_recipe.md).
        best = EarlyStopping(monitor, mode=mode, patience=_NO_STOP,
                             restore_best_weights=True, best_model_path=best_model_path,
                             stop_on_nonfinite=True, tie_breaker=tie)
        curve = CurveBasedLR(monitor, mode=mode, patience=patience, min_delta=0.0,
                             rollback_to=best, tie_breaker=tie)
        guard = DivergenceGuard()
        progress = [] if verbose == 0 else [BudgetProgress(budget, verbose)]
        history = _fit(model, trainer, epochs=10**6, verbose=0, steps_per_epoch=steps,
                       validation_data=validation_data,
                       validation_batch_size=None if _inputs.is_dataset(validation_data)
                       else max(batch_size, 256),
                       callbacks=[timed, best, curve, guard, *extra, *progress], **feed)

    reason = stop_reason([guard, best, timed], stopped=True)
    if reason == "nonfinite":
        warnings.warn(f"fit_budgeted stopped: {STOP_REASONS[reason]} (see result.events); "
                      "the model holds the best finite epoch, if any.", RuntimeWarning,
                      stacklevel=2)
    result = BudgetedResult(
        history=history, best_epoch=None if best.best is None else best.best_epoch,
        best_value=best.best, monitor=monitor, stop_reason=reason,
        learning_rate=learning_rate, seconds=_seconds(budget, search, validation_seconds),
        events=sorted((e for cb in (timed, best, curve, guard) for e in cb.events),
                      key=lambda e: e["epoch"]),
        budget_seconds=budget.seconds, steps_per_epoch=steps)
    if verbose != 0:
        print(result.summary())
    return result


def _epoch_steps(budget: Budget, validation_seconds: float, natural: int | None,
                 per_execution: int, stream: bool) -> int | None:
    """Steps between two validations: validation at most a fifth of the time and at
    most ``_VALIDATIONS`` of them; a whole number of executions. Outside a
    stream (arrays under JAX or torch) one pass over the data."""
    pace = budget.pace
    if not stream:  # arrays outside TensorFlow: an epoch is a pass
        return None
    if pace is None:  # the range test ran fewer than two calls
        return natural or 100 * per_execution
    share = (1 - _VALIDATION_SHARE) / _VALIDATION_SHARE
    seconds = max(share * validation_seconds, budget.remaining() / _VALIDATIONS)
    return per_execution * max(1, math.ceil(seconds / pace / per_execution))


def _patience(budget: Budget, validation_seconds: float, steps: int | None) -> int:
    """Validations without a new best before a cut: a tenth of those the rest of
    the budget allows, at least 3."""
    pace = budget.pace
    if pace is None or steps is None:
        return 3
    expected = budget.remaining() / (steps * pace + validation_seconds)
    return max(3, math.ceil(_PATIENCE * expected))


def _choose_peak(search: LRRangeTest, rate: float) -> dict:
    """The optimizer's rate, unless the search says it is off by more than 3x
    (a short range test places its valley only within about that factor)."""
    result = search.result
    if result is None or result.suggestion is None:
        reason = search.skipped_reason or "the search saw no usable loss curve"
        return {"peak": rate, "source": "optimizer", "reason": reason}
    found = {"low": search.min_lr, "high": search.max_lr,
             "steps": len(search.losses), "suggested": float(result.suggestion)}
    if rate / _PEAK_CLIP <= result.suggestion <= rate * _PEAK_CLIP:
        return {"peak": rate, "source": "optimizer",
                "reason": f"the search agreed with it within a factor {_PEAK_CLIP:g}", **found}
    return {"peak": float(result.suggestion), "source": "search", **found}


def _seconds(budget: Budget, search: LRRangeTest, validation_seconds: float) -> dict:
    split = budget.split()
    searched = search.split.get("train", 0.0)
    seconds = {"lr_search": searched, "compile": split["compile"],
               "train": split["train"] - searched,
               "validate": split["validate"] + 2 * validation_seconds}
    seconds["other"] = max(split["other"] - 2 * validation_seconds, 0.0)  # before fit
    seconds["total"] = sum(split.values())  # the clock read once, for the split
    return {k: round(v, 3) for k, v in seconds.items()}


# Plumbing ------------------------------------------------------------------------

def _check_model(model, trainer):
    if trainer is not None:
        from kerastune_kit.training import Trainer

        if not isinstance(trainer, Trainer):
            raise ValueError(
                f"`trainer` must be a kerastune_kit.Trainer or None, got {trainer!r}.")
        if model is not None and model is not trainer.model:
            raise ValueError(
                "`model` must be the trainer's model (trainer.model) when `trainer` is "
                "given; the Trainer trains its own model.")
        return trainer.model
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a compiled keras.Model, got {type(model).__name__}.")
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        raise ValueError(
            "`model` must be compiled: call model.compile(optimizer=..., loss=..., "
            "metrics=[...]) first; fit_budgeted uses the optimizer's rate as its prior.")
    return model


@contextlib.contextmanager
def _more_steps_per_execution(model, trainer, x, batch_size):
    """Runs several steps per compiled call where the user left one (a small
    model on a CPU spends most of a step in dispatch), and gives the user's
    value back: up to 32, at least 4 calls an epoch. Not under torch (one
    step per call there), on several replicas, or with the Trainer (its own
    option). Yields the steps per call."""
    user = getattr(model, "steps_per_execution", 1)
    strategy = getattr(model, "distribute_strategy", None)
    if (trainer is not None or keras.backend.backend() == "torch" or user != 1
            or getattr(strategy, "num_replicas_in_sync", 1) > 1):
        yield 1 if trainer is not None else user
        return
    steps = _inputs.steps_per_epoch(x, batch_size)
    model.steps_per_execution = 8 if steps is None else max(1, min(32, steps // 4))
    try:
        yield model.steps_per_execution
    finally:
        model.steps_per_execution = user
        _optimizer.invalidate_traces(model, evaluation=True)


def _evaluator(model, trainer, validation_data, batch_size):
    """A function returning one validation pass's logs (without ``val_``)."""
    if _inputs.is_dataset(validation_data):
        if trainer is not None:
            return lambda: trainer.evaluate(validation_data, verbose=0)
        return lambda: model.evaluate(validation_data, verbose=0, return_dict=True)
    xv, yv, wv = _inputs.unpack_validation(validation_data)
    size = max(batch_size, 256)
    if trainer is not None:
        return lambda: trainer.evaluate(xv, yv, batch_size=size, sample_weight=wv, verbose=0)
    return lambda: model.evaluate(xv, yv, sample_weight=wv, batch_size=size, verbose=0,
                                  return_dict=True)


def _timed(function, clock) -> float:
    began = clock()
    function()
    return clock() - began


def _fit(model, trainer, **kwargs):
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if trainer is None:
        return model.fit(**kwargs)
    return trainer.fit(**kwargs)
