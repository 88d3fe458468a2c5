"""Writes the fixtures of test_pre_redesign_files.py (run once, on the code before the redesign).

``pre_redesign_schedules.json``: the configs ``keras.saving.serialize_keras_object``
wrote for the schedules that became compositions, and their values at integer
steps and at the fractional positions the epoch and second units give.
``pre_redesign_model.keras``: a tiny model whose optimizer's rate is a Sequence of
those schedules, trained a few steps, with its weights and the rate after loading.

Written at main 3452ffb (before issue 14's schedules by composition) with
``cd /work/main && python tests/schedules/data/write_pre_redesign.py OUT_DIR``; the
model files with the oldest Keras CI runs (3.10.0, ``.ci/oldest.txt``), so that every
Keras the kit supports reads them (a newer Keras writes config keys an older one
refuses, such as Dense's ``quantization_config``).
Running it on later code writes what that code computes, for comparison.
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerastune_kit import schedules as S  # noqa: E402

POSITIONS = [0, 0.5, 1, 2, 2.1, 2.5, 3, 5, 9, 9.5, 10, 11, 19.99, 20, 24, 25, 25.5, 29.99,
             30, 30.01, 49, 50, 69.9, 70, 74, 75, 75.5, 79, 80, 81, 90, 99, 99.5, 100, 100.5,
             101, 150, 1000]

SCHEDULES = [
    S.LinearDecay(1.0, 100),
    S.LinearDecay(2.0, decay_steps=30, end_learning_rate=0.5),
    S.LinearDecay(0.1, decay_steps=1, end_learning_rate=0.3),
    S.OneCycle(1.0, 100),
    S.OneCycle(0.5, total_steps=7, pct_start=0.3, anneal="linear"),
    S.OneCycle(1.0, total_steps=100, pct_start=0.25, div_factor=10, final_div_factor=100),
    S.OneCycle(3e-3, total_steps=2, pct_start=0.9),
    S.WarmupStableDecay(1.0, 100),
    S.WarmupStableDecay(2.0, 100, warmup_steps=10, decay_steps=25, final_learning_rate=0.2,
                        decay_shape="cosine"),
    S.WarmupStableDecay(1.0, 100, warmup_steps=10, decay_steps=20, initial_learning_rate=0.1,
                        decay_shape="1-sqrt"),
    S.WarmupStableDecay(1.0, 80, warmup_steps=30, decay_steps=50),
    S.WarmupStableDecay(1.0, 50, warmup_steps=0, decay_steps=0, final_learning_rate=0.5),
    S.WarmupStableDecay(0.5, 30, warmup_steps=30, decay_steps=0),
    S.WarmupStableDecay(0.5, 30, warmup_steps=0, decay_steps=30, decay_shape="cosine"),
    S.WarmupStableDecay(0.7, 1),
    S.Warmup(S.OneCycle(0.5, total_steps=200), warmup_steps=7),
    S.Sequence([S.WarmupStableDecay(1.0, 40, 5, 10), S.OneCycle(1.0, 30),
                S.LinearDecay(0.5, 20)], boundaries=[40, 70]),
]


def values(schedule, positions=POSITIONS):
    return [float(schedule(np.float32(p))) for p in positions]


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    entries = [{"config": keras.saving.serialize_keras_object(s), "values": values(s)}
               for s in SCHEDULES]
    with open(os.path.join(out_dir, "pre_redesign_schedules.json"), "w") as f:
        f.write(f'{{"positions": {json.dumps(POSITIONS)},\n "schedules": [\n  ')
        f.write(",\n  ".join(json.dumps(entry) for entry in entries) + "\n]}\n")

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(SCHEDULES[-1]), loss="mse")
    x = np.arange(8, dtype="float32").reshape(4, 2) / 8
    model.fit(x, x[:, :1], batch_size=2, epochs=2, verbose=0, shuffle=False)
    path = os.path.join(out_dir, "pre_redesign_model.keras")
    model.save(path)
    with open(os.path.join(out_dir, "pre_redesign_model.json"), "w") as f:
        json.dump({"weights": [w.tolist() for w in model.get_weights()],
                   "iterations": int(model.optimizer.iterations.numpy()),
                   "learning_rate": float(model.optimizer.learning_rate)}, f)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
