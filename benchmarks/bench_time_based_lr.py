"""Overhead of TimeBasedLR(unit="step") in model.fit.

Prints JSON: median steps/s of ``model.fit`` on a small MLP with
``steps_per_execution=32``, with a kit schedule driven per step versus the
same optimizer with a constant rate and no callback, interleaved in the
same run. Target: overhead <= 3%.

Run: ``python benchmarks/bench_time_based_lr.py [--repeats 7] [--steps 1024]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerastune_kit import schedules  # noqa: E402
from kerastune_kit.callbacks import TimeBasedLR  # noqa: E402


def build(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((32,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=32)
    return model


def steps_per_second(with_schedule: bool, x, y, batch_size: int) -> float:
    model = build()
    callbacks = []
    if with_schedule:
        schedule = schedules.Warmup(schedules.CosineDecay(0.01, 10_000), warmup_steps=500)
        callbacks = [TimeBasedLR(schedule, unit="step")]
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=callbacks)  # warm-up
    steps = len(x) // batch_size
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=2, verbose=0, callbacks=callbacks)
    return 2 * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1024, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.normal(size=(n, 32)).astype("float32")
    y = rng.integers(0, 10, size=(n,))
    constant, scheduled = [], []
    for _ in range(args.repeats):  # interleaved: both see the same machine noise
        constant.append(steps_per_second(False, x, y, args.batch_size))
        scheduled.append(steps_per_second(True, x, y, args.batch_size))
    c, s = statistics.median(constant), statistics.median(scheduled)
    print(json.dumps({
        "benchmark": "TimeBasedLR(unit='step') overhead in model.fit",
        "steps_per_execution": 32,
        "repeats": args.repeats,
        "constant_lr_steps_per_s": round(c, 1),
        "time_based_lr_steps_per_s": round(s, 1),
        "overhead_pct": round(100 * (c - s) / c, 2),
        "target_overhead_pct": 3.0,
        "runs": {"constant": [round(v, 1) for v in constant],
                 "time_based_lr": [round(v, 1) for v in scheduled]},
    }, indent=2))


if __name__ == "__main__":
    main()
