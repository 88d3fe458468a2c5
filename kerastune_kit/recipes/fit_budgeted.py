"""One call: the best model a compiled Keras model can become in a time budget."""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable

import keras

from kerastune_kit import _keras_private as private
from kerastune_kit import _optimizer
from kerastune_kit._validation import (
    check_callable,
    check_callbacks,
    check_choice,
    check_int,
    check_number,
    check_positive,
)
from kerastune_kit.callbacks import DivergenceGuard, EarlyStopping, TimeBasedLR, _lr_control
from kerastune_kit.callbacks._base import KitCallback
from kerastune_kit.recipes._peak_search import PeakSearch
from kerastune_kit.recipes.budgeted_result import BudgetedResult
from kerastune_kit.schedules import LinearDecay, Warmup

# The schedule's length in positions; TimeBasedLR maps it onto the steps
# the budget buys, so only the proportions matter.
_LENGTH = 1000
_WARMUP = 50          # the first 5% of the steps
_SEARCH_SHARE = 0.05  # of the budget, at most, for the LR search
_SEARCH_RANGE = 10.0  # the search spans [lr / 10, lr * 10] around the optimizer's rate
_PEAK_CLIP = 3.0      # and overrides that rate only when it is off by more than this


def fit_budgeted(model, x, y=None, *, budget_seconds: float, validation_data=None,
                 validation_split: float = 0.0, batch_size: int = 32, callbacks=None,
                 verbose="auto", trainer=None,
                 clock: Callable[[], float] | None = None) -> BudgetedResult:
    """Trains a compiled model for a wall-clock budget with the kit's whole recipe.

    The user gives a compiled model and a budget; the recipe chooses the
    learning rate, the schedule, how often to validate and when to stop,
    and the model ends with the weights of its best validation epoch. All
    wall-clock time of the call counts against the budget (the LR search,
    compiling, validation), and the call, its last validation included,
    ends within it (up to one execution's estimate).

    The recipe, and why:

    1. **Time goes into training.** The final schedule is installed before
       anything is compiled, so the one function Keras compiles serves the
       LR search and the training. Where the user left
       ``steps_per_execution=1`` (and the backend allows more), up to 32
       steps run per compiled call (at least 4 calls an epoch): a small
       model on a CPU spends most of a step in Python dispatch. Under
       TensorFlow, arrays are fed as one shuffled, repeated ``tf.data``
       stream, so no iterator is rebuilt per epoch; small validation sets
       are one call of the compiled test function instead of an
       ``evaluate`` with its set-up. On scikit-learn's digits this trains
       about three times as many epochs in a budget as ``model.fit`` with
       its defaults does. The user's ``steps_per_execution`` is put back
       at the end.
    2. **The schedule** is a linear warmup over the first 5% of the steps
       and a linear decay to zero at the END of the budget (Li et al.,
       "Budgeted training", ICLR 2020: a schedule that reaches zero when
       the budget ends beats one cut off by it), indexed by steps against
       what the budget buys at the measured pace
       (:class:`~kerastune_kit.callbacks.TimeBasedLR` with
       ``unit="second"``), so compile time never eats the warmup.
    3. **The peak rate** is the optimizer's own rate, checked by a short LR
       range test in that compiled function: the rate ramps from a tenth to
       ten times the optimizer's, on at most 5% of the budget and at most
       100 calls, and the weights, optimizer state and step counter are put
       back afterwards. A short test places its "valley" (see
       :class:`~kerastune_kit.tuning.LRFinderResult`) only within a factor
       of about 3, so its suggestion replaces the optimizer's rate only when
       it is farther off than that (a badly chosen prior, such as SGD at a
       tenth of what the model takes). When 5% of the budget buys fewer
       than 20 calls there is no search. ``learning_rate`` says which
       happened.
    4. **Validation where it pays**: every epoch while a pass costs at most
       a quarter of the training since the last one, more often in the last
       quarter of the budget, always at the first and the last epoch.
    5. **The best model**: an in-memory
       :class:`~kerastune_kit.callbacks.EarlyStopping` keeps the best
       epoch and restores it at the end. Epochs rank by the validation
       accuracy when the model is compiled with an accuracy metric (what a
       classifier is judged on), ties broken by the lower validation loss
       (so of two epochs with the same accuracy the later, better
       converged one wins); else by the validation loss.
    6. **Curve-based control**: when the validation curve has not improved
       for a twentieth of the validations the budget allows (at least 5),
       training goes back to the best weights and the rate is halved (a cut
       of the schedule's factor: it still ends at zero with the budget), so
       a model that starts to memorise noisy labels spends the rest of the
       budget refining its best state; after 3 such cuts without a new best
       the curve has clearly turned and training stops
       (``stop_reason == "patience"``).
       :class:`~kerastune_kit.callbacks.DivergenceGuard` rolls a diverging
       run back to its last good epoch and halves the rate.

    Measured with ``benchmarks/bench_budgeted_recipe.py`` against a careful
    Keras user (Adam 1e-3 + ``ReduceLROnPlateau(0.5, patience=3)`` +
    ``EarlyStopping(patience=8, restore_best_weights=True)`` + a stop at the
    budget) with the same compiled model, mean test accuracy of 3 seeds at
    10 s: digits MLP 0.982 vs 0.978, digits with 15% of the training
    labels flipped 0.966 vs 0.952, digits CNN 0.981 vs 0.982 (within one
    test sample, with the lower test loss); the README has the table at 10
    and 30 s.

    Args:
        model: a compiled ``keras.Model`` (with ``trainer``: the Trainer's
            model, compiled or not).
        x: training inputs: arrays (or a dict/list of arrays), or a
            ``tf.data.Dataset`` of ``(x, y)`` batches.
        y: targets for array inputs. Defaults to None.
        budget_seconds: the wall-clock budget, ``> 0``.
        validation_data: ``(x_val, y_val)`` or a dataset. The recipe needs a
            validation curve: give this or ``validation_split``.
        validation_split: the fraction of array inputs (their end, as
            ``model.fit`` takes it) kept for validation, in ``[0, 1)``.
            Defaults to 0.
        batch_size: for array inputs, ``>= 1``. Defaults to 32.
        callbacks: more callbacks for the training run (Keras's or the
            kit's, e.g. ``TensorBoardCurves``). Defaults to None.
        verbose: as ``model.fit``'s; ``"auto"`` (default), 0, 1 or 2.
        trainer: a :class:`kerastune_kit.Trainer` to train with instead of
            ``model.fit``. Defaults to None.
        clock: the time source, a function returning seconds, that the
            budget is measured with. Defaults to ``time.monotonic``; a
            simulation or a test passes its own (a clock that moves by a
            fixed amount per step makes the run independent of the
            machine's speed).

    Returns:
        A :class:`BudgetedResult`.

    Example:

    ```python
    import kerastune_kit
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    result = kerastune_kit.fit_budgeted(model, x, y, budget_seconds=10,
                                        validation_split=0.2)
    result.best_epoch, result.best_value, result.stop_reason
    result.learning_rate   # {"peak": 0.003, "source": "search", ...}
    result.seconds         # {"lr_search": 1.1, "compile": 2.0, "train": 50.3, ...}
    ```
    """
    clock = time.monotonic if clock is None else check_callable(
        "clock", clock, "a function returning seconds")
    started = clock()
    budget = float(check_positive("budget_seconds", budget_seconds))
    model = _check_model(model, trainer)
    split = float(check_number("validation_split", validation_split, low=0.0, high=1.0,
                               high_open=True))
    batch_size = check_int("batch_size", batch_size, minimum=1)
    verbose = check_choice("verbose", verbose, ("auto", 0, 1, 2))
    extra = check_callbacks(callbacks)
    x, y, validation_data = _validation(x, y, validation_data, split)
    monitor = _monitor(model)

    # 1. The final schedule, installed before anything is compiled, and
    # several steps per compiled call where the user left one.
    rate = _optimizer.current_learning_rate(model)
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(
            f"fit_budgeted needs the optimizer's learning rate as its prior, a finite "
            f"number > 0; this optimizer's is {rate!r}.")
    schedule = Warmup(LinearDecay(1.0, _LENGTH - _WARMUP), _WARMUP)
    controlled = _optimizer.controlled_schedule(model)
    controlled.schedule, controlled.unit = schedule, "second"
    user_steps_per_execution = _more_steps_per_execution(model, trainer, x, batch_size)
    _optimizer.invalidate_traces(model, evaluation=True)
    feed = _feed(x, y, batch_size, trainer)
    try:
        # 2. The peak: a short range test in that compiled function.
        search = PeakSearch(rate / _SEARCH_RANGE, rate * _SEARCH_RANGE,
                            seconds=_SEARCH_SHARE * budget, peak_position=_WARMUP,
                            clock=clock)
        _fit(model, trainer, epochs=10**6, callbacks=[search], verbose=0, **feed)
        learning_rate = _choose_peak(search, rate)

        # 3. Training for the rest of the budget, validated when it pays.
        timed = TimeBasedLR(schedule, unit="second", budget_seconds=budget,
                            clock=clock)
        timed.set_state({"elapsed_seconds": clock() - started,
                         "factor": learning_rate["peak"], "position": 0.0})
        guard = DivergenceGuard()
        validation = _Validation(_evaluator(model, trainer, validation_data, batch_size),
                                 monitor, timed, guard, clock)
        progress = [] if verbose == 0 else [_Progress(timed, validation, verbose)]
        history = _fit(model, trainer, epochs=10**6, verbose=0,
                       callbacks=[timed, validation, guard, *extra, *progress], **feed)
    finally:
        if user_steps_per_execution is not None:
            model.steps_per_execution = user_steps_per_execution
            _optimizer.invalidate_traces(model, evaluation=True)

    total = clock() - started
    split_seconds = timed.seconds
    seconds = {"lr_search": search.search_seconds,
               "compile": search.compile_seconds + split_seconds["compile"],
               "train": split_seconds["train"], "validate": validation.seconds}
    seconds["other"] = max(total - sum(seconds.values()), 0.0)
    seconds["total"] = total
    best = validation.best
    events = sorted((e for cb in (timed, guard, validation, best) for e in cb.events),
                    key=lambda e: e["epoch"])
    return BudgetedResult(
        history=history, best_epoch=None if best.best is None else best.best_epoch,
        best_value=validation.best_value,
        monitor=monitor, stop_reason=_stop_reason(timed, guard, validation),
        learning_rate=learning_rate, seconds={k: round(v, 3) for k, v in seconds.items()},
        events=events)


class _Validation(KitCallback):
    """Validates at the epoch ends where it pays, keeps the best epoch, and
    reacts when the validation curve turns.

    * When: every epoch whose training since the last pass took at least 4
      times a pass (so validation costs at most a fifth of the time; with
      the direct test-function path that is nearly every epoch), in the
      last quarter of the budget when it took at least one pass, and always
      the first and the last epoch.
    * Best: an :class:`EarlyStopping` keeps the best epoch in memory and
      restores it at the end. Epochs rank by the monitored value, ties
      broken by the lower validation loss (of two epochs with the same
      accuracy the later, better converged one wins).
    * Turns: when ``patience`` validations in a row bring no new best (a
      twentieth of the validations the budget is expected to allow, at
      least 5), training goes back to the best weights and the rate is
      halved (a cut of the schedule's factor, so it still ends at zero with
      the budget): on data the model starts to memorise (label noise),
      this spends the rest of the budget refining the best model instead of
      over-fitting further. After 3 such cuts in a row without a new best
      the curve has clearly turned and training stops.
    """

    key = "fit_budgeted_score"
    max_cuts = 3

    def __init__(self, evaluate, monitor: str, timed: TimeBasedLR,
                 guard: DivergenceGuard | None = None, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.evaluate, self.monitor, self.timed = evaluate, monitor, timed
        self.clock = clock
        self.guard = guard
        self.best = EarlyStopping(monitor=self.key, mode="max", patience=10**9,
                                  restore_best_weights=True, stop_on_nonfinite=True)
        self.seconds = 0.0
        self.best_value = None
        self.cuts: list[int] = []
        self.stopped = False
        self._pass_seconds = None
        self._passes: list[float] = []
        self._last_end = None
        self._validations = 0
        self._since_best = 0
        self._fruitless_cuts = 0

    def set_model(self, model):
        super().set_model(model)
        self.best.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.best.set_params(params)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best.on_train_begin(logs)
        self._last_end = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        if not self._due(now):
            return
        values = self.evaluate()
        done = self.clock()
        # The median of the last passes: one pass held up by something else
        # (a garbage collection, another process) must not set the pace.
        self._passes = [*self._passes[-2:], done - now]
        self._pass_seconds = statistics.median(self._passes)
        self.seconds += done - now
        self._last_end = done
        self._validations += 1
        logs.update({f"val_{name}": float(value) for name, value in values.items()})
        if self.monitor not in logs:
            raise KeyError(
                f"fit_budgeted monitors {self.monitor!r}, which validation did not return; "
                f"it returned {sorted(f'val_{n}' for n in values)}.")
        value = float(logs[self.monitor])
        if self.monitor == "val_loss":
            logs[self.key] = -value
        else:
            logs[self.key] = value - 1e-6 * float(logs.get("val_loss", 0.0))
        before = self.best.best
        self.best.on_epoch_end(epoch, logs)
        logs.pop(self.key, None)
        if self.best.best != before:  # a new best is strictly better
            self.best_value = value
            self._since_best = 0
            self._fruitless_cuts = 0
            return
        self._since_best += 1
        if self._since_best >= self._patience() and not self.model.stop_training:
            self._turned(epoch)

    def on_train_end(self, logs=None):
        self.best.on_train_end(logs)

    def _turned(self, epoch):
        self._since_best = 0
        if self._fruitless_cuts >= self.max_cuts:
            self.stopped = True
            self.model.stop_training = True
            self.record_event("stop", epoch, "the validation curve has turned",
                              cuts=self._fruitless_cuts, best_epoch=self.best.best_epoch)
            return
        self._fruitless_cuts += 1
        self.cuts.append(epoch)
        _optimizer.host_sync(self.model)
        self.model.set_weights(self.best.best_weights)
        if self.guard is not None:
            self.guard.rebase()  # the best epoch's loss is no spike
        old_lr, new_lr = _lr_control.scale_learning_rate(self.model, 0.5)
        self.record_event("lr_cut", epoch, "no new best: back to the best epoch, rate halved",
                          old_lr=old_lr, new_lr=new_lr, best_epoch=self.best.best_epoch)

    def _due(self, now: float) -> bool:
        if self._pass_seconds is None or getattr(self.model, "stop_training", False):
            return True
        since = now - self._last_end
        late = self.timed.elapsed_now() >= 0.75 * self.timed.budget_seconds
        return since >= (1.0 if late else 4.0) * self._pass_seconds

    def _patience(self) -> int:
        spent = self.timed.elapsed_now() / self.timed.budget_seconds
        expected = self._validations / max(spent, 1e-3)
        return max(5, math.ceil(expected / 20))


class _Progress(keras.callbacks.Callback):
    """Keras's progress bar over the budget's seconds (``model.fit``'s own
    would count epochs out of an open-ended number): one update per
    validated epoch with the time spent, the epoch, the rate and the
    validation values."""

    def __init__(self, timed: TimeBasedLR, validation: _Validation, verbose):
        super().__init__()
        self.timed, self.validation = timed, validation
        self.bar = keras.utils.Progbar(
            target=math.ceil(timed.budget_seconds), unit_name="s",
            verbose=1 if verbose == "auto" else verbose,
            stateful_metrics=["epoch", "learning_rate", "val_loss", validation.monitor])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not any(k.startswith("val_") for k in logs):
            return  # shown at the validated epochs only, so no value is stale
        values = [("epoch", epoch + 1), ("learning_rate", logs.get("learning_rate", 0.0))]
        values += [(k, v) for k, v in logs.items() if k.startswith("val_")]
        elapsed = self.timed.elapsed_now()
        self.bar.update(min(elapsed, self.bar.target - 1e-6), values=values)

    def on_train_end(self, logs=None):
        self.bar.update(self.bar.target, values=[], finalize=True)


def _more_steps_per_execution(model, trainer, x, batch_size) -> int | None:
    """Runs several steps per compiled call where the user left one.

    A small model on a CPU spends most of a step in Python and dispatch; a
    few steps per call turn that into training (the maths is the same). Up
    to 32 steps, at least 4 calls an epoch (so the pace and the budget stop
    stay fine-grained). Not under torch (Keras runs one step per call
    there), a strategy with several replicas, or the kit's Trainer (its own
    option). Returns the user's value to put back, or None if unchanged.
    """
    if trainer is not None or keras.backend.backend() == "torch":
        return None
    if getattr(model, "steps_per_execution", 1) != 1:
        return None
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and getattr(strategy, "num_replicas_in_sync", 1) > 1:
        return None
    steps = _steps_per_epoch(x, batch_size)
    model.steps_per_execution = 8 if steps is None else max(1, min(32, steps // 4))
    return 1


def _steps_per_epoch(x, batch_size) -> int | None:
    if _is_dataset(x):
        cardinality = int(x.cardinality())
        return cardinality if cardinality > 0 else None
    try:
        return math.ceil(len(keras.tree.flatten(x)[0]) / batch_size)
    except TypeError:
        return None


def _evaluator(model, trainer, validation_data, batch_size):
    """A function returning the validation logs (without the ``val_`` prefix).

    ``model.evaluate`` costs tens of milliseconds of set-up per call (an
    iterator, a callback list): more than a small model's whole validation
    pass, which the recipe may run at every epoch. Validation arrays of at
    most ``max(512, 4 * batch_size)`` samples are therefore one call of the
    compiled test function (``test_on_batch``, exact for every metric);
    larger ones, and datasets, go through ``evaluate``.
    """
    if _is_dataset(validation_data):
        if trainer is not None:
            return lambda: trainer.evaluate(validation_data, verbose=0)
        return lambda: model.evaluate(validation_data, verbose=0, return_dict=True)
    xv, yv, wv = (tuple(validation_data) + (None,) * 3)[:3]
    if trainer is not None:
        return lambda: trainer.evaluate(xv, yv, batch_size=batch_size, sample_weight=wv,
                                        verbose=0)
    if len(keras.tree.flatten(xv)[0]) > max(512, 4 * batch_size):
        return lambda: model.evaluate(xv, yv, sample_weight=wv, batch_size=batch_size,
                                      verbose=0, return_dict=True)

    def evaluate():
        _optimizer.host_sync(model)
        model.reset_metrics()  # Keras 3.10 to 3.13's test_on_batch does not
        logs = model.test_on_batch(xv, yv, sample_weight=wv, return_dict=True)
        return {name: float(value) for name, value in logs.items()}

    return evaluate


def _choose_peak(search: PeakSearch, rate: float) -> dict:
    """The optimizer's rate, unless the search says it is off by more than 3x.

    A short range test places its "valley" only within a factor of about 3
    (the loss of a few dozen steps is noisy, and falls with training as well
    as with the rate), so a rate within that factor of the optimizer's is no
    evidence against the user's choice, which stays the peak. A rate
    farther off is a badly chosen prior (say SGD at a tenth of what the
    model takes), and the search's rate replaces it.
    """
    result = search.result
    if result is None or result.suggestion is None:
        reason = search.skipped_reason or "the search saw no usable loss curve"
        return {"peak": rate, "source": "optimizer", "reason": reason}
    found = {"low": float(search.low), "high": float(search.high),
             "steps": len(search.losses), "suggested": float(result.suggestion)}
    if rate / _PEAK_CLIP <= result.suggestion <= rate * _PEAK_CLIP:
        return {"peak": rate, "source": "optimizer",
                "reason": f"the search agreed with the optimizer's rate within a factor "
                          f"{_PEAK_CLIP:g}", **found}
    return {"peak": float(result.suggestion), "source": "search", **found}


def _stop_reason(timed, guard, validation) -> str:
    if validation.stopped:
        return "patience"
    if guard.stopped:
        return "divergence"
    if timed.budget_exhausted:
        return "budget"
    return "epochs"


# Checks and plumbing ------------------------------------------------------------

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


def _validation(x, y, validation_data, split):
    if validation_data is not None:
        return x, y, validation_data
    if split == 0:
        raise ValueError(
            "fit_budgeted needs a validation curve to pick the best epoch and to stop: "
            "pass validation_data=(x_val, y_val) or validation_split in (0, 1); got "
            "neither.")
    if _is_dataset(x):
        raise ValueError(
            "validation_split needs array inputs (it takes their last fraction); with a "
            "dataset pass validation_data.")
    n = len(keras.tree.flatten(x)[0])
    cut = int(n * (1.0 - split))
    if cut < 1 or cut >= n:
        raise ValueError(
            f"validation_split={split} of {n} samples leaves no training or no "
            "validation sample.")
    head = keras.tree.map_structure(lambda a: a[:cut], (x, y))
    tail = keras.tree.map_structure(lambda a: a[cut:], (x, y))
    return head[0], head[1], tail


def _is_dataset(x) -> bool:
    return type(x).__name__ in ("DatasetV2", "_PrefetchDataset") or hasattr(x, "element_spec")


def _monitor(model) -> str:
    for name in private.compiled_metric_names(model):  # the Trainer's model is compiled too
        if re.fullmatch(r"(\w+_)?acc(uracy)?", name or ""):
            return f"val_{name}"
    return "val_loss"


def _fit(model, trainer, **kwargs):
    if trainer is None:
        return model.fit(**kwargs)
    return trainer.fit(**kwargs)


def _feed(x, y, batch_size, trainer) -> dict:
    """The training data as ``fit`` gets it.

    With TensorFlow, arrays become one shuffled, repeated ``tf.data`` stream
    read ``steps_per_epoch`` batches an epoch: ``model.fit`` then keeps one
    iterator for the whole run instead of building one per epoch (tens of
    milliseconds an epoch, a large share of a small model's epoch). The
    batches and their per-epoch reshuffling are what ``model.fit`` does
    with the arrays.
    """
    if trainer is not None or keras.backend.backend() != "tensorflow" or _is_dataset(x):
        return {"x": x, "y": y, "batch_size": None if _is_dataset(x) else batch_size,
                "shuffle": not _is_dataset(x)}
    import tensorflow as tf

    n = len(keras.tree.flatten(x)[0])
    data = tf.data.Dataset.from_tensor_slices((x, y) if y is not None else x)
    data = data.shuffle(n, reshuffle_each_iteration=True).batch(batch_size).repeat()
    return {"x": data.prefetch(tf.data.AUTOTUNE), "steps_per_epoch": math.ceil(n / batch_size),
            "shuffle": False}
