"""Epoch time of model.fit with the kit's LR callbacks, on any Keras backend.

Prints JSON: for a small CNN (Conv2D on 16x16x1, 128 steps an epoch), the
median epoch time (epochs after the first of each fit, which compiles) with
no callback, with ``TimeBasedLR(unit="epoch")``, with
``TimeBasedLR(unit="second")`` (a budget far from spent, so it only maps
time onto the schedule) and with ``CurveBasedLR`` cutting every epoch; the
ratio of each to no callback, computed per repeat and then the median; and
how often the train step was traced. Repeats are interleaved so every
variant sees the same machine noise. Target: within 5% of no callback, and
one trace per fit.

Run: ``KERAS_BACKEND=jax python benchmarks/bench_backends.py [--repeats 5]``
(the backend defaults to JAX).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerastune_kit import schedules  # noqa: E402
from kerastune_kit.callbacks import CurveBasedLR, TimeBasedLR  # noqa: E402


class CountingCNN(keras.Sequential):
    traces = 0

    def train_step(self, *args, **kwargs):
        CountingCNN.traces += 1
        return super().train_step(*args, **kwargs)


def build():
    keras.utils.set_random_seed(0)
    model = CountingCNN([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class FlatCurve(keras.callbacks.Callback):
    """A flat validation curve, so CurveBasedLR cuts at every epoch."""

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = 1.0


def variants():
    return {
        "none": lambda: [],
        "time_based_epoch": lambda: [TimeBasedLR(schedules.StepDecay(1e-3, 1, 0.9),
                                                 unit="epoch")],
        "time_based_second": lambda: [TimeBasedLR(schedules.LinearDecay(1e-3, 100_000),
                                                  unit="second", budget_seconds=3600)],
        "curve_based_cuts": lambda: [FlatCurve(), CurveBasedLR(patience=1, factor=0.9)],
    }


def run(name, make_callbacks, x, y, epochs):
    model = build()
    times = EpochTimes()
    CountingCNN.traces = 0
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0,
              callbacks=[*make_callbacks(), times])
    return statistics.median(times.seconds[1:]), CountingCNN.traces


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((4096, 16, 16, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=(4096,))
    seconds = {name: [] for name in variants()}
    traces = {}
    for _ in range(args.repeats):
        for name, make in variants().items():
            epoch_seconds, traced = run(name, make, x, y, args.epochs)
            seconds[name].append(epoch_seconds)
            traces[name] = traced
    ratios = {name: statistics.median(s / n for s, n in zip(values, seconds["none"]))
              for name, values in seconds.items() if name != "none"}
    print(json.dumps({
        "benchmark": "epoch time of model.fit with the kit's LR callbacks",
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "repeats": args.repeats,
        "epochs_per_fit": args.epochs,
        "median_epoch_seconds": {k: round(statistics.median(v), 4) for k, v in seconds.items()},
        "ratio_to_no_callback": {k: round(v, 3) for k, v in ratios.items()},
        "target_ratio": 1.05,
        "train_step_traces_per_fit": traces,
        "runs": {k: [round(s, 4) for s in v] for k, v in seconds.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
