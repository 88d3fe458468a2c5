"""fit_budgeted against plain-Keras recipes at the same wall-clock budget.

Prints JSON: test accuracy and test loss (mean over seeds) and wall time of
three recipes at each budget, on each data set:

* ``seed_chapter``: Adam 1e-3 at a fixed rate, the best-val-loss weights
  kept, stopped at the budget.
* ``careful_keras``: Adam 1e-3 + ``ReduceLROnPlateau(0.5, patience=3)`` +
  ``EarlyStopping(patience=8, restore_best_weights=True)`` + a stop at the
  budget (Keras's built-ins only).
* ``fit_budgeted``: the same compiled model (Adam 1e-3) handed to
  :func:`kerastune_kit.fit_budgeted`.

Data (all shipped with scikit-learn, nothing downloaded): ``digits`` (an
MLP on the 8x8 images as 64 features), ``noisy_digits`` (the same with 15%
of the training labels flipped to another class), ``digits_cnn`` (a small
CNN on the 8x8x1 images). ``--datasets`` adds development sets that the
recipe was also checked on: ``breast_cancer``, ``wine``, ``blobs`` (a
synthetic 20-feature, 5-class problem with label noise).

Also printed: compute-to-target, the seconds fit_budgeted needed to first
reach the careful recipe's final validation accuracy (None when it never
did), from its per-epoch validation curve.

Each run is a fresh Python process.

Run: ``python benchmarks/bench_budgeted_recipe.py [--budgets 10 30 90] [--seeds 3]``
(the full default grid takes about an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerastune_kit  # noqa: E402

REQUIRED = ("digits", "noisy_digits", "digits_cnn")
DEVELOPMENT = ("breast_cancer", "wine", "blobs")


# Data -------------------------------------------------------------------------

def _split(x, y, seed, test=0.2, val=0.2):
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test, random_state=seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val, random_state=seed, stratify=y_rest)
    return x_train, y_train, x_val, y_val, x_test, y_test


def _flip(y, fraction, classes, seed):
    rng = np.random.default_rng(seed + 1000)
    y = y.copy()
    flip = rng.random(len(y)) < fraction
    y[flip] = (y[flip] + rng.integers(1, classes, size=int(flip.sum()))) % classes
    return y


def load(name, seed):
    """(x_train, y_train, x_val, y_val, x_test, y_test, classes, kind)."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    if name in ("digits", "noisy_digits", "digits_cnn"):
        d = datasets.load_digits()
        x, y = (d.data / 16.0).astype("float32"), d.target.astype("int32")
        parts = list(_split(x, y, seed))
        if name == "noisy_digits":  # training labels only; validation and test stay clean
            parts[1] = _flip(parts[1], 0.15, 10, seed)
        if name == "digits_cnn":
            for i in (0, 2, 4):
                parts[i] = parts[i].reshape(-1, 8, 8, 1)
        return (*parts, 10, "cnn" if name == "digits_cnn" else "mlp")
    if name == "blobs":
        x, y = datasets.make_classification(
            n_samples=4000, n_features=20, n_informative=10, n_classes=5,
            n_clusters_per_class=2, flip_y=0.05, random_state=seed)
        classes = 5
    else:
        d = getattr(datasets, f"load_{name}")()
        x, y = d.data, d.target
        classes = int(y.max()) + 1
    parts = list(_split(x.astype("float32"), y.astype("int32"), seed))
    scaler = StandardScaler().fit(parts[0])
    for i in (0, 2, 4):
        parts[i] = scaler.transform(parts[i]).astype("float32")
    return (*parts, classes, "mlp")


def build(kind, input_shape, classes, seed):
    keras.utils.set_random_seed(seed)
    if kind == "cnn":
        layers = [keras.Input(input_shape),
                  keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                  keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
                  keras.layers.MaxPooling2D(),
                  keras.layers.Flatten(),
                  keras.layers.Dense(128, activation="relu"),
                  keras.layers.Dense(classes)]
    else:
        layers = [keras.Input(input_shape),
                  keras.layers.Dense(256, activation="relu"),
                  keras.layers.Dense(128, activation="relu"),
                  keras.layers.Dense(classes)]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


# Recipes ------------------------------------------------------------------------

class StopAtBudget(keras.callbacks.Callback):
    """What a careful Keras user writes: stop once the budget is spent."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start >= self.seconds:
            self.model.stop_training = True


class ValCurve(keras.callbacks.Callback):
    """(seconds since the recipe began, val_accuracy) at each epoch end."""

    def __init__(self, start):
        super().__init__()
        self.start, self.points = start, []

    def on_epoch_end(self, epoch, logs=None):
        if "val_accuracy" in logs:
            self.points.append((time.monotonic() - self.start, float(logs["val_accuracy"])))


def seed_chapter(model, data, budget, start):
    x, y, xv, yv = data[:4]
    keep = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10**9,
                                         restore_best_weights=True)
    curve = ValCurve(start)
    model.fit(x, y, validation_data=(xv, yv), batch_size=32, epochs=10**6, verbose=0,
              callbacks=[StopAtBudget(budget), keep, curve])
    return curve.points


def careful_keras(model, data, budget, start):
    x, y, xv, yv = data[:4]
    curve = ValCurve(start)
    model.fit(x, y, validation_data=(xv, yv), batch_size=32, epochs=10**6, verbose=0,
              callbacks=[StopAtBudget(budget),
                         keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=3),
                         keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True),
                         curve])
    return curve.points


def fit_budgeted(model, data, budget, start):
    x, y, xv, yv = data[:4]
    curve = ValCurve(start)
    result = kerastune_kit.fit_budgeted(model, x, y, budget_seconds=budget,
                                        validation_data=(xv, yv), callbacks=[curve], verbose=0)
    return curve.points, result


RECIPES = {"seed_chapter": seed_chapter, "careful_keras": careful_keras,
           "fit_budgeted": fit_budgeted}


def run(recipe, name, seed, budget):
    # Every recipe starts from a clean process state: without this, the
    # objects of earlier runs pile up and a garbage collection of several
    # seconds can land inside a timed run.
    keras.backend.clear_session()
    gc.collect()
    data = load(name, seed)
    model = build(data[7], data[0].shape[1:], data[6], seed)
    start = time.monotonic()
    out = RECIPES[recipe](model, data, budget, start)
    seconds = time.monotonic() - start
    points, result = (out if isinstance(out, tuple) else (out, None))
    loss, accuracy = model.evaluate(data[4], data[5], batch_size=256, verbose=0)
    _, val_accuracy = model.evaluate(data[2], data[3], batch_size=256, verbose=0)
    row = {"test_accuracy": float(accuracy), "test_loss": float(loss), "seconds": seconds,
           "val_curve": points, "val_accuracy": float(val_accuracy)}
    if result is not None:
        row["peak_lr"] = result.learning_rate["peak"]
        row["lr_source"] = result.learning_rate["source"]
        row["stop_reason"] = result.stop_reason
        row["split"] = result.seconds
        row["best_epoch"], row["best_value"] = result.best_epoch, result.best_value
        row["finite_weights"] = bool(all(np.isfinite(w).all() for w in model.get_weights()))
    return row


def run_fresh(recipe, name, seed, budget):
    """One run in a fresh Python process: a long TensorFlow process accumulates
    state that can decide a comparison."""
    out = subprocess.run([sys.executable, __file__, "--one", recipe, name, str(seed),
                          str(budget)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--one":
        recipe, name, seed, budget = sys.argv[2:]
        print(json.dumps(run(recipe, name, int(seed), float(budget))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[10, 30, 90])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=list(REQUIRED),
                        choices=[*REQUIRED, *DEVELOPMENT])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = parser.parse_args()
    table = []
    for name in args.datasets:
        for budget in args.budgets:
            rows = {recipe: [] for recipe in args.recipes}
            for seed in range(args.seeds):
                for recipe in args.recipes:  # interleaved, same machine noise
                    rows[recipe].append(run_fresh(recipe, name, seed, budget))
            entry = {"data": name, "budget_seconds": budget}
            for recipe, runs in rows.items():
                entry[recipe] = {
                    "test_accuracy": round(statistics.mean(r["test_accuracy"] for r in runs), 4),
                    "test_loss": round(statistics.mean(r["test_loss"] for r in runs), 4),
                    "seconds": round(statistics.mean(r["seconds"] for r in runs), 2),
                    "per_seed_accuracy": [round(r["test_accuracy"], 4) for r in runs],
                }
                if recipe == "fit_budgeted":
                    entry[recipe]["peak_lr"] = [r["peak_lr"] for r in runs]
                    entry[recipe]["lr_source"] = [r["lr_source"] for r in runs]
                    entry[recipe]["stop_reason"] = [r["stop_reason"] for r in runs]
                    entry[recipe]["best"] = [(r["best_epoch"], r["best_value"],
                                              r["finite_weights"]) for r in runs]
                    entry[recipe]["seconds_split"] = {
                        k: round(statistics.mean(r["split"][k] for r in runs), 2)
                        for k in runs[0]["split"]}
            if "fit_budgeted" in rows and "careful_keras" in rows:
                targets = []
                for careful, kit in zip(rows["careful_keras"], rows["fit_budgeted"]):
                    target = careful["val_accuracy"]  # of the model it returned
                    reached = [t for t, acc in kit["val_curve"] if acc >= target]
                    targets.append(round(reached[0], 2) if reached else None)
                entry["fit_budgeted_seconds_to_careful_val_accuracy"] = targets
            table.append(entry)
            print(json.dumps(entry), flush=True)
    summary = {}
    for recipe in args.recipes:
        summary[recipe] = round(statistics.mean(e[recipe]["test_accuracy"] for e in table), 4)
    wins = sum(e["fit_budgeted"]["test_accuracy"] >= e["careful_keras"]["test_accuracy"]
               for e in table) if {"fit_budgeted", "careful_keras"} <= set(args.recipes) else None
    print(json.dumps({"benchmark": "budgeted recipe vs plain Keras", "seeds": args.seeds,
                      "mean_test_accuracy": summary,
                      "cells_fit_budgeted_at_least_careful": wins, "cells": len(table)},
                     indent=2))


if __name__ == "__main__":
    main()
