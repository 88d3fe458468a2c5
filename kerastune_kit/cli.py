"""The ``kerastune-kit`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _demo(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from kerastune_kit import schedules
    from kerastune_kit.callbacks import TimeBasedLR

    keras.utils.set_random_seed(args.seed)
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=args.seed, stratify=y)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    steps = args.epochs * int(np.ceil(len(x_train) * 0.85 / args.batch_size))
    schedule = schedules.Warmup(schedules.CosineDecay(3e-3, steps), warmup_steps=steps // 10)
    start = time.monotonic()
    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        validation_split=0.15, callbacks=[TimeBasedLR(schedule)], verbose=1)
    _, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    summary = {
        "epochs_run": len(history.history["loss"]),
        "final_val_accuracy": history.history["val_accuracy"][-1],
        "test_accuracy": float(test_accuracy),
        "wall_seconds": round(time.monotonic() - start, 2),
    }
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kerastune-kit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train on scikit-learn's bundled digits data")
    demo.add_argument("--epochs", type=int, default=20)
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
