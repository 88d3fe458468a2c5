"""The main job: train on scikit-learn's bundled digits with the whole kit.

It needs no download: the 1,797 8x8 digit images ship inside scikit-learn.
Used by ``kerastune-kit demo`` and ``kerastune-kit find-lr``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DigitsData:
    """Stratified train / validation / test splits of the digits data set."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_splits(seed: int = 0) -> DigitsData:
    """Digits scaled to [0, 1], split 64% / 16% / 20% (stratified, seeded).

    Args:
        seed: the split's random seed. Defaults to 0.

    Example:

    >>> from kerastune_kit.demo import load_digits_splits
    >>> data = load_digits_splits()
    >>> data.x_train.shape, data.x_test.shape
    ((1149, 64), (360, 64))
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "The demo needs scikit-learn (it ships the digits data): "
            "pip install 'kerastune_kit[demo]'") from err
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, random_state=seed, stratify=y_rest)
    return DigitsData(x_train, y_train, x_val, y_val, x_test, y_test)


def build_digits_model(l2: float = 1e-4):
    """A small MLP for digits, with an L2 penalty attached after it is built."""
    import keras

    from kerastune_kit import regularizers

    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ], name="digits_mlp")
    # The kit attaches regularizers to an already built model.
    regularizers.apply(model, kernel=regularizers.l2(l2))
    return model


def run_demo(*, epochs: int = 40, batch_size: int = 64, budget_seconds: float | None = None,
             strategy: str = "auto", logdir: str = "runs", name: str | None = None,
             seed: int = 0, peak_learning_rate: float = 3e-3, verbose: int = 1) -> dict[str, Any]:
    """Trains digits with the kit's loop and callbacks; returns the summary.

    The run uses :class:`~kerastune_kit.Trainer` with an L2 penalty attached
    by :func:`kerastune_kit.regularizers.apply` and
    :class:`~kerastune_kit.callbacks.TensorBoardCurves`. Without a budget it
    assembles the parts by hand: a warmup + cosine
    :class:`~kerastune_kit.callbacks.TimeBasedLR` by step, a
    :class:`~kerastune_kit.callbacks.CurveBasedLR` on the validation loss and
    :class:`~kerastune_kit.callbacks.EarlyStopping` with best-model restore
    and ``best_model_path``. With ``budget_seconds`` it hands the model to
    :func:`kerastune_kit.fit_budgeted`, which chooses all of that itself. It writes
    ``<logdir>/<name>/`` with the event files, ``best.keras``, ``curves.png``
    and ``summary.json``.

    Args:
        epochs: maximum epochs. Defaults to 40.
        batch_size: global batch size. Defaults to 64.
        budget_seconds: a wall-clock budget: the run is then
            :func:`kerastune_kit.fit_budgeted` (``epochs`` and
            ``peak_learning_rate`` only set the optimizer's prior rate and
            the hparams). Defaults to None (the parts by hand).
        strategy: a name for :func:`kerastune_kit.training.resolve_strategy`.
            Defaults to ``"auto"``.
        logdir: the folder of runs. Defaults to ``"runs"``.
        name: the run's folder name; a folder that already holds a run
            (event files, or the demo's outputs) raises ``ValueError``
            before any training. Defaults to ``demo-<timestamp>`` (with a
            ``-<n>`` suffix if that one is taken).
        seed: seeds the split, the weights and the shuffling. Defaults to 0.
        peak_learning_rate: the LR after warmup. Defaults to 3e-3.
        verbose: 1 shows the progress bar and the summary. Defaults to 1.

    Returns:
        The summary dict written to ``summary.json``. Its epoch numbers
        (``best_epoch``, the ``lr_cuts``' ``epoch``) are 1-based, as the
        terminal, the PNG and the TensorBoard texts show them; the callbacks'
        attributes and events keep Keras's 0-based epoch index.

    Example:

    ```python
    from kerastune_kit.demo import run_demo
    summary = run_demo(epochs=5, logdir="/tmp/runs", name="quick")
    summary["test_accuracy"]
    ```
    """
    import keras
    import tensorflow as tf

    from kerastune_kit import Trainer
    from kerastune_kit._files.atomic import check_writable_folder
    from kerastune_kit.callbacks import TensorBoardCurves
    from kerastune_kit.plotting import plot_run

    if name is None:
        name = _free_default_name(logdir)
    run_dir = os.path.join(logdir, name)
    # Before any training, not after: one folder holds one run.
    held = _held_run(run_dir)
    if held:
        raise ValueError(
            f"`name`: the run folder {run_dir!r} already holds a run ({held}); "
            "pass another name or delete that folder.")
    check_writable_folder("logdir", run_dir)

    start = time.monotonic()
    keras.utils.set_random_seed(seed)
    data = load_digits_splits(seed)
    trainer = Trainer(build_digits_model, lambda: keras.optimizers.Adam(peak_learning_rate),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], strategy=strategy, steps_per_execution=8)

    train = (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
             .shuffle(len(data.x_train), seed=seed).batch(batch_size))
    hparams = {"epochs": epochs, "batch_size": batch_size, "seed": seed,
               "peak_learning_rate": peak_learning_rate, "l2": 1e-4,
               "strategy": str(strategy), "budget_seconds": budget_seconds or 0.0}
    curves = TensorBoardCurves(run_dir, lr_every_steps=1, hparams=hparams)
    if budget_seconds is not None:
        summary = _budgeted_run(trainer, train, data, budget_seconds, curves, run_dir,
                                verbose)
    else:
        summary = _scheduled_run(trainer, train, data, epochs, batch_size,
                                 peak_learning_rate, curves, run_dir, verbose)
    plot_run(run_dir, os.path.join(run_dir, "curves.png"),
             title="kerastune-kit demo: digits")
    summary.update({
        "wall_seconds": round(time.monotonic() - start, 2),
        "run_dir": run_dir,
        "strategy": type(trainer.strategy).__name__.lstrip("_"),
        "replicas": trainer.strategy.num_replicas_in_sync,
    })
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if verbose:
        _print_summary(summary)
    return summary


# What a finished (or started) demo leaves in its run folder, besides event files.
_DEMO_OUTPUTS = ("best.keras", "curves.png", "summary.json")


def _held_run(run_dir: str) -> str:
    """What shows that ``run_dir`` already holds a run, shortly; ``""`` if nothing."""
    from kerastune_kit.plotting._events import run_event_files

    found = run_event_files(run_dir) + [
        name for name in _DEMO_OUTPUTS if os.path.lexists(os.path.join(run_dir, name))]
    if len(found) > 3:
        found = [*found[:3], f"... {len(found) - 3} more"]
    return ", ".join(found)


def _free_default_name(logdir: str) -> str:
    """``demo-<timestamp>``, or ``demo-<timestamp>-<n>`` if that folder holds a run."""
    base = time.strftime("demo-%Y%m%d-%H%M%S")
    name, n = base, 2
    while _held_run(os.path.join(logdir, name)):
        name, n = f"{base}-{n}", n + 1
    return name


def _scheduled_run(trainer, train, data, epochs, batch_size, peak_learning_rate, curves,
                   run_dir, verbose) -> dict[str, Any]:
    """The kit's parts by hand: warmup + cosine by step, plateau cuts, early stopping."""
    from kerastune_kit import schedules
    from kerastune_kit.callbacks import CurveBasedLR, EarlyStopping, TimeBasedLR

    steps_per_epoch = math.ceil(len(data.x_train) / batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = max(1, total_steps // 20)
    schedule = schedules.Warmup(
        schedules.CosineDecay(peak_learning_rate, decay_steps=total_steps - warmup,
                              alpha=0.01),
        warmup_steps=warmup)
    time_based = TimeBasedLR(schedule)
    curve_based = CurveBasedLR(monitor="val_loss", factor=0.5, patience=3, cooldown=2)
    early_stopping = EarlyStopping(monitor="val_accuracy", patience=10,
                                   restore_best_weights=True, stop_on_nonfinite=True,
                                   best_model_path=os.path.join(run_dir, "best.keras"),
                                   verbose=verbose)
    history = trainer.fit(train, epochs=epochs, validation_data=(data.x_val, data.y_val),
                          callbacks=[time_based, curve_based, early_stopping, curves],
                          verbose=verbose)
    test = trainer.evaluate(data.x_test, data.y_test, batch_size=256, verbose=0)
    return {
        "recipe": "TimeBasedLR + CurveBasedLR + EarlyStopping",
        "best_epoch": _one_based(early_stopping.best_epoch
                                 if early_stopping.best_value is not None else None),
        "best_val_accuracy": early_stopping.best_value,
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "stop_reason": early_stopping.stop_reason or "epochs",
        "epochs_run": len(history.history["loss"]),
        "lr_cuts": [{"epoch": e["epoch"] + 1, "old_lr": e["old_lr"], "new_lr": e["new_lr"],
                     "reason": e["reason"]} for e in curve_based.events],
    }


def _budgeted_run(trainer, train, data, budget_seconds, curves, run_dir,
                  verbose) -> dict[str, Any]:
    """:func:`kerastune_kit.fit_budgeted` with the kit's Trainer."""
    from kerastune_kit import fit_budgeted
    from kerastune_kit._files.atomic import replace_atomically

    result = fit_budgeted(trainer.model, train, budget_seconds=budget_seconds,
                          validation_data=(data.x_val, data.y_val), callbacks=[curves],
                          verbose=verbose, trainer=trainer)
    replace_atomically(os.path.join(run_dir, "best.keras"),
                       lambda temp: trainer.model.save(temp))
    test = trainer.evaluate(data.x_test, data.y_test, batch_size=256, verbose=0)
    return {
        "recipe": "fit_budgeted",
        "best_epoch": _one_based(result.best_epoch),
        "best_val_accuracy": result.best_value,
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "stop_reason": result.stop_reason,
        "epochs_run": len(result.history.history["loss"]),
        "lr_cuts": [{"epoch": e["epoch"] + 1, "old_lr": e["old_lr"], "new_lr": e["new_lr"],
                     "reason": e["reason"]} for e in result.events if e["kind"] == "lr_cut"],
        "peak_learning_rate": result.learning_rate["peak"],
        "seconds": result.seconds,
    }


def _one_based(epoch: int | None) -> int | None:
    """An epoch index (Keras's, 0-based) as a person counts it."""
    return None if epoch is None else int(epoch) + 1


def _print_summary(summary: dict[str, Any]) -> None:
    cuts = summary["lr_cuts"]
    cut_text = ", ".join(f"epoch {c['epoch']}: {c['old_lr']:.2e} -> {c['new_lr']:.2e}"
                         for c in cuts) or "none"
    print()
    print("kerastune-kit demo: digits (scikit-learn, no download)")
    print(f"  best epoch          {summary['best_epoch']}")
    print(f"  best val accuracy   {summary['best_val_accuracy']:.4f}")
    print(f"  test accuracy       {summary['test_accuracy']:.4f}")
    print(f"  stop reason         {summary['stop_reason']}")
    print(f"  LR cuts             {cut_text}")
    print(f"  wall time           {summary['wall_seconds']:.1f} s "
          f"({summary['strategy']}, {summary['replicas']} replica(s))")
    print(f"  run folder          {summary['run_dir']} "
          "(best.keras, curves.png, summary.json, event files)")
    print()
    print(f"View the curves:  tensorboard --logdir {summary['run_dir']}")
