"""A budgeted hyper-parameter search: Optuna picks, fit_budgeted trains."""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable

import keras

from kerastune_kit._args.validation import (
    check_callable,
    check_callbacks,
    check_choice,
    check_int,
    check_number,
    check_positive,
)
from kerastune_kit._files.atomic import _START, replace_atomically, write_json_atomically
from kerastune_kit._files.ownership import exclusive
from kerastune_kit.recipes import _inputs
from kerastune_kit.tuning import _search_folder
from kerastune_kit.tuning.search_result import SearchResult

_ETA = 3                  # successive halving: a third of each rung goes on, for 3x the time
_MAX_RUNGS = 4            # budgets r, 3r, 9r, 27r at most
MIN_TRIAL_SECONDS = 5.0   # the shortest trial: compiling, the rate search and a few epochs
_MAX_RETRIES = 3          # of a trial whose worker died
_OWNER_SECONDS = 10.0     # a trial's worker writes its owner record within this
_OWNER = {"host": socket.gethostname(), "pid": os.getpid(), "start": _START}


def search(build: Callable, x, y=None, *, budget_seconds: float, validation_data=None,
           validation_split: float = 0.0, batch_size: int = 32, study=None,
           directory: str = "runs/search", monitor: str | None = None, callbacks=None,
           verbose="auto", seed: int | None = None,
           clock: Callable[[], float] | None = None) -> SearchResult:
    """Searches hyper-parameters for a wall-clock budget, with Optuna.

    ``build(trial)`` asks an ``optuna.Trial`` for parameters and returns a
    compiled model; each trial trains one with
    :func:`~kerastune_kit.fit_budgeted` for its own budget, by asynchronous
    successive halving: many trials at a short budget, the best third of
    each rung run again, from scratch, at three times the budget. Several
    processes or machines running the same search on one stored study
    share its budget. Each trial's curves go to TensorBoard under
    ``directory/trial-N``, the best model to ``directory/best.keras``.
    The rungs, the workers and the measurements: ``docs/search.md``.

    Args:
        build: ``build(trial) -> keras.Model``, compiled.
        x: training inputs, as :func:`~kerastune_kit.fit_budgeted` takes them.
        y: targets for array inputs. Defaults to None.
        budget_seconds: the whole search's wall-clock budget in seconds,
            ``>= 5``.
        validation_data: ``(x_val, y_val)`` or a dataset. Defaults to None.
        validation_split: the fraction of array inputs kept for validation,
            in ``[0, 1)``, when there is no ``validation_data``. Defaults to 0.
        batch_size: for array inputs. Defaults to 32.
        study: an ``optuna.Study`` with one objective, in any storage.
            Defaults to None: a new in-memory study, TPE sampler, no pruner.
        directory: the folder of the trials' curves and ``best.keras``, one
            study per folder. Defaults to ``"runs/search"`` (then numbered).
        monitor: the validation metric to rank trials by, as Keras logs it.
            Defaults to None: the first accuracy, else ``"val_loss"``.
        callbacks: more callbacks for every trial. Defaults to None.
        verbose: 0, 1 (a progress bar), 2 (a line per trial) or ``"auto"``
            (1); 1 and 2 print a summary at the end. Defaults to ``"auto"``.
        seed: seeds the default study's sampler. Defaults to None.
        clock: a function returning seconds. Defaults to None (``time.time``).

    Returns:
        A :class:`~kerastune_kit.SearchResult`.

    Raises:
        ValueError: for bad input, before anything trains or is stored.
        ImportError: when Optuna is not installed.

    Example:

    ```python
    import kerastune_kit

    def build(trial):
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(
            trial.suggest_int("units", 4, 32), activation="relu"), keras.layers.Dense(3)])
        model.compile(keras.optimizers.Adam(trial.suggest_float("lr", 1e-4, 1e-2, log=True)),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    result = kerastune_kit.search(build, x, y, budget_seconds=10, validation_split=0.2,
                                  verbose=0)
    result.best_params, result.best_value   # result.best_model is restored
    ```
    """
    optuna = _optuna()
    if seed is not None:
        seed = check_int("seed", seed)
    if study is not None and not isinstance(study, optuna.Study):
        raise ValueError(f"`study` must be an optuna.Study or None, got {study!r}.")

    def study_for(direction: str):
        if study is not None:
            return study
        return optuna.create_study(direction=direction,
                                   sampler=optuna.samplers.TPESampler(seed=seed),
                                   pruner=optuna.pruners.NopPruner())

    return search_in(study_for, build, x, y, budget_seconds=budget_seconds,
                     validation_data=validation_data, validation_split=validation_split,
                     batch_size=batch_size, directory=directory, monitor=monitor,
                     callbacks=callbacks, verbose=verbose, clock=clock)


def search_in(study_for: Callable[[str], object], build: Callable, x, y=None, *,
              budget_seconds: float, validation_data=None, validation_split: float = 0.0,
              batch_size: int = 32, directory: str = "runs/search",
              monitor: str | None = None, callbacks=None, verbose="auto",
              clock: Callable[[], float] | None = None) -> SearchResult:
    """:func:`search` in the study ``study_for(direction)`` returns, called once
    the monitor's direction is known ("maximize" or "minimize"): the command
    line creates or loads its stored study there."""
    optuna = _optuna()
    check_callable("build", build)
    budget_seconds = check_positive("budget_seconds", budget_seconds)
    rungs = rung_budgets(budget_seconds)
    fraction = float(check_number("validation_split", validation_split, low=0.0, high=1.0,
                                  high_open=True))
    batch_size = check_int("batch_size", batch_size, minimum=1)
    verbose = 1 if check_choice("verbose", verbose, ("auto", 0, 1, 2)) == "auto" else verbose
    extra = check_callbacks(callbacks)
    if monitor is not None and (not isinstance(monitor, str) or not monitor):
        raise ValueError(f"`monitor` must be a metric name as Keras logs it, such as "
                         f"'val_accuracy', or None; got {monitor!r}.")
    if clock is not None:
        check_callable("clock", clock)
    _search_folder.check_not_file(directory)

    x, y, sample_weight, validation_data = _inputs.checked(x, y, None, validation_data,
                                                           fraction)
    monitor, mode = _probe(build, validation_data, batch_size, monitor, optuna)
    direction = "maximize" if mode == "max" else "minimize"
    study = study_for(direction)
    if len(study.directions) != 1:
        raise ValueError(
            f"`study` must have one objective; study {study.study_name!r} has "
            f"{len(study.directions)} (directions={[d.name for d in study.directions]}).")
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"`study` {study.study_name!r} is to {study.direction.name.lower()}, but "
            f"monitor={monitor!r} is to {direction}: create the study with "
            f"direction={direction!r}, or pass another monitor.")
    clock = time.time if clock is None else clock
    folder = _search_folder.SearchFolder(directory, study.study_name,
                                         numbered=directory == "runs/search")
    with folder:
        deadline, rungs = _shared_deadline(study, budget_seconds, rungs, clock)
        run = _Search(study, build, dict(x=x, y=y, sample_weight=sample_weight,
                                         validation_data=validation_data,
                                         batch_size=batch_size),
                      monitor, mode, extra, folder.path, rungs, deadline, clock, verbose)
        run.run()
    return run.result()


def rung_budgets(seconds: float) -> list[float]:
    """The trial budgets of successive halving in ``seconds`` of search.

    Each rung costs about the same time (a third of the trials, at three
    times the budget) and the first holds at least three trials, so ``k``
    rungs start at ``seconds / (k * max(3, 3**(k - 1)))``; ``k`` is the
    largest (at most 4) whose first rung is at least ``MIN_TRIAL_SECONDS``.
    """
    if seconds < MIN_TRIAL_SECONDS:
        raise ValueError(
            f"budget_seconds={seconds:g} is too small for one trial: a trial compiles, "
            f"searches a rate and trains a few epochs; the search needs at least "
            f"{MIN_TRIAL_SECONDS:g} s.")

    def first(rungs):
        return seconds / (rungs * max(_ETA, _ETA ** (rungs - 1)))

    rungs = 1
    while rungs < _MAX_RUNGS and first(rungs + 1) >= MIN_TRIAL_SECONDS:
        rungs += 1
    return [round(max(MIN_TRIAL_SECONDS, first(rungs)) * _ETA**k, 3) for k in range(rungs)]


class _Search:
    """One worker's loop over trials until the study's deadline."""

    def __init__(self, study, build, data, monitor, mode, callbacks, directory, rungs,
                 deadline, clock, verbose):
        self.study, self.build, self.data = study, build, data
        self.monitor, self.mode, self.callbacks = monitor, mode, callbacks
        self.directory, self.rungs, self.deadline = directory, rungs, deadline
        self.clock, self.verbose = clock, verbose
        self.best_model, self.best_number = None, None
        self.report = not isinstance(study.pruner, _optuna().pruners.NopPruner)
        self.progress = None
        if verbose == 1:
            self.progress = keras.utils.Progbar(
                max(1, round(deadline - clock())), unit_name="s",
                stateful_metrics=["trials", "best"])

    def run(self) -> None:
        while True:
            remaining = self.deadline - self.clock()
            if remaining < MIN_TRIAL_SECONDS:
                break
            _fail_trials_of_gone_owners(self.study)  # queued again: this worker runs them
            with exclusive(os.path.join(self.directory, ".promote.lock")):
                self._promote(remaining)
            # n_trials=1: Optuna pops a waiting trial (a promotion or a retry)
            # or samples a new one, beats the storage's heartbeat and fails
            # the trials whose heartbeat stopped.
            self.study.optimize(self._objective, n_trials=1, catch=(_NoFiniteEpoch,),
                                gc_after_trial=False)
            self._show()
        if self.progress is not None:
            self.progress.update(self.progress.target, self._progress_values(), finalize=True)

    def _promote(self, remaining: float) -> None:
        """Queues the best unpromoted trial of the highest rung that has one."""
        trials = self.study.get_trials(deepcopy=False)
        parents = {t.user_attrs.get("ktk_parent") for t in trials}
        sign = -1 if self.mode == "max" else 1
        for rung in reversed(range(len(self.rungs) - 1)):
            # A promoted run may be cut by the deadline, but not below its parent's budget.
            if remaining < self.rungs[rung]:
                continue
            done = [t for t in trials if t.state.name == "COMPLETE"
                    and t.user_attrs.get("ktk_rung", 0) == rung]
            done.sort(key=lambda t: sign * t.value)
            for t in done[:len(done) // _ETA]:
                if t.number not in parents:
                    self.study.enqueue_trial(
                        t.params, user_attrs={"ktk_rung": rung + 1, "ktk_parent": t.number})
                    return

    def _objective(self, trial) -> float:
        optuna = _optuna()
        from kerastune_kit.callbacks import TensorBoardCurves
        from kerastune_kit.recipes import fit_budgeted

        trial.set_user_attr("ktk_owner", _OWNER)
        rung = min(int(trial.user_attrs.get("ktk_rung", 0)), len(self.rungs) - 1)
        budget = max(1.0, min(self.rungs[rung], self.deadline - self.clock()))
        trial.set_user_attr("ktk_rung", rung)
        trial.set_user_attr("ktk_budget", round(budget, 3))
        keras.backend.clear_session()  # as Keras Tuner does: each trial's graph from scratch
        model = _built(self.build, trial)
        more = [TensorBoardCurves(os.path.join(self.directory, f"trial-{trial.number}"),
                                  hparams={**trial.params, "budget_seconds": budget})]
        reporter = _ReportToTrial(trial, self.monitor) if self.report else None
        if reporter is not None:
            more.append(reporter)
        result = fit_budgeted(model, **self.data, budget_seconds=budget, monitor=self.monitor,
                              mode=self.mode, callbacks=[*self.callbacks, *more], verbose=0,
                              clock=None if self.clock is time.time else self.clock)
        trial.set_user_attr("ktk_seconds", result.seconds["total"])
        trial.set_user_attr("ktk_stop_reason", result.stop_reason)
        trial.set_user_attr("ktk_peak_lr", result.learning_rate["peak"])
        trial.set_user_attr("ktk_best_epoch", result.best_epoch)
        if reporter is not None and reporter.pruned:
            raise optuna.TrialPruned(f"pruned by {type(self.study.pruner).__name__}")
        if result.best_value is None or not math.isfinite(result.best_value):
            raise _NoFiniteEpoch(f"trial {trial.number}: no epoch had a finite {self.monitor}")
        self._keep_if_best(model, trial.number, float(result.best_value))
        return float(result.best_value)

    def _keep_if_best(self, model, number: int, value: float) -> None:
        """Writes ``best.keras`` when this trial beats the folder's best."""
        path = os.path.join(self.directory, "best.json")
        with exclusive(path + ".lock"):
            best = _read_json(path)
            if best is not None and not self._better(value, best["value"]):
                return
            replace_atomically(os.path.join(self.directory, "best.keras"), model.save)
            write_json_atomically(path, {"trial": number, "value": value,
                                         "study": self.study.study_name})
        self.best_model, self.best_number = model, number

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    def _progress_values(self):
        done = [t for t in self.study.get_trials(deepcopy=False)
                if t.state.name == "COMPLETE"]
        values = [("trials", len(done))]
        if done:
            values.append(("best", self.study.best_value))
        return values

    def _show(self) -> None:
        if self.progress is not None:
            elapsed = self.progress.target - max(0.0, self.deadline - self.clock())
            self.progress.update(min(max(0, round(elapsed)), self.progress.target - 1),
                                 self._progress_values())
        elif self.verbose == 2:
            last = self.study.get_trials(deepcopy=False)[-1]
            print(f"trial {last.number}: {last.state.name.lower()} "
                  f"{self.monitor}={last.value} budget={last.user_attrs.get('ktk_budget')} "
                  f"s params={last.params}")

    def result(self) -> SearchResult:
        trials = tuple(_row(t) for t in self.study.get_trials(deepcopy=False))
        complete = [t for t in trials if t["state"] == "COMPLETE"]
        best = self.study.best_trial if complete else None
        path = os.path.join(self.directory, "best.keras")
        model = self.best_model
        record = _read_json(os.path.join(self.directory, "best.json"))
        if record is not None and record["trial"] != self.best_number:
            model = keras.saving.load_model(path)  # another worker's trial beat ours
        result = SearchResult(
            best_params=dict(best.params) if best else {},
            best_value=best.value if best else None, monitor=self.monitor,
            best_model=model, best_model_path=path if record is not None else None,
            trials=trials, study=self.study)
        if self.verbose:
            print(result.summary())
        return result


class _ReportToTrial(keras.callbacks.Callback):
    """Reports the monitored value to an Optuna pruner each epoch, and ends
    the trial's training (not by an exception: the recipe restores its best
    epoch) when the pruner says so."""

    def __init__(self, trial, monitor: str):
        super().__init__()
        self.trial, self.monitor, self.pruned = trial, monitor, False

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned = True
            self.model.stop_training = True


class _NoFiniteEpoch(RuntimeError):
    """A trial without one finite validation value (Optuna records it failed)."""


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError(
            "kerastune_kit.search needs Optuna: pip install 'kerastune_kit[search]'.") from None
    return optuna


def _built(build, trial):
    model = build(trial)
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`build(trial)` must return a compiled keras.Model; it returned "
            f"{type(model).__name__}.")
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        raise ValueError(
            "`build(trial)` returned a model that is not compiled: call model.compile("
            "optimizer=..., loss=..., metrics=[...]) inside build.")
    return model


def _probe(build, validation_data, batch_size: int, monitor, optuna):
    """Builds one model for a throwaway trial (checking what ``build``
    returns) and resolves the monitor and its direction from one batch of
    validation: before anything trains and before anything is stored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(0)).ask()
    model = _built(build, trial)
    if _inputs.is_dataset(validation_data):
        logs = model.evaluate(validation_data.take(1), verbose=0, return_dict=True)
    else:
        xv, yv, wv = _inputs.unpack_validation(validation_data)
        head = keras.tree.map_structure(lambda a: None if a is None else a[:batch_size],
                                        [xv, yv, wv], none_is_leaf=True)
        logs = model.evaluate(*head[:2], sample_weight=head[2], verbose=0,
                              return_dict=True)
    return _inputs.resolve_monitor(model, logs, monitor, "auto", "search")


def _shared_deadline(study, budget_seconds: float, rungs: list, clock):
    """The study's deadline and rungs: set by the first worker, read by the
    others (so every worker stops when the one budget is spent)."""
    attrs = study.user_attrs
    if "ktk_deadline" not in attrs:
        study.set_user_attr("ktk_rungs", rungs)
        study.set_user_attr("ktk_budget_seconds", budget_seconds)
        study.set_user_attr("ktk_deadline", clock() + budget_seconds)
        attrs = study.user_attrs
    elif attrs.get("ktk_budget_seconds") != budget_seconds:
        warnings.warn(
            f"study {study.study_name!r} already holds a search of "
            f"{attrs.get('ktk_budget_seconds')} s; this worker joins it (budget_seconds="
            f"{budget_seconds:g} is ignored).", stacklevel=3)
    return float(attrs["ktk_deadline"]), [float(r) for r in attrs["ktk_rungs"]]


def _fail_trials_of_gone_owners(study) -> None:
    """Fails, and queues again, this host's running trials whose process is
    gone (journal storages have no heartbeat; the owner record stands in)."""
    optuna = _optuna()
    from kerastune_kit._files.atomic import writer_alive

    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get("ktk_owner")
        if not owner or owner.get("host") != _OWNER["host"]:
            continue
        if (now - trial.datetime_start).total_seconds() < _OWNER_SECONDS:
            continue  # its new worker may not have written itself in yet
        if writer_alive(int(owner["pid"]), owner.get("start")):
            continue
        try:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=_MAX_RETRIES)
        retry(study, study.get_trials(deepcopy=False)[trial.number])


def _row(trial) -> dict:
    attrs = trial.user_attrs
    return {"number": trial.number, "params": dict(trial.params),
            "rung": attrs.get("ktk_rung", 0), "budget": attrs.get("ktk_budget", 0.0),
            "value": trial.value if trial.state.name == "COMPLETE" else None,
            "seconds": attrs.get("ktk_seconds"), "state": trial.state.name,
            "stop_reason": attrs.get("ktk_stop_reason")}


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
