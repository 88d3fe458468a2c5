"""Small real-Keras helpers shared by the test modules (not a test module)."""

import functools

import keras
import numpy as np
import pytest
from keras import ops

from kerastune_kit.callbacks import KitCallback, _lr_control


@functools.cache
def two_replicas():
    """MirroredStrategy over the two logical CPUs conftest.py makes (one object
    per process).

    Reduction to one device: collective ops' instance keys are per strategy
    object, and other MirroredStrategy objects of a test process would reuse
    them (a TensorFlow limitation, not the kit's). The two-worker tests run
    real collectives.
    """
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())


class CountEpochs(keras.callbacks.Callback):
    """Counts epoch begins; it writes nothing into the epoch logs."""

    def __init__(self):
        super().__init__()
        self.begun = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.begun += 1


def mean_output(y_true, y_pred):
    """The probe models' loss: the mean prediction (a named function, so models save)."""
    return ops.mean(y_pred, axis=-1)


def lr_probe_model(optimizer=None, steps_per_execution=1, lr=0.0, units=1):
    """``units`` weights w, input 1, loss = mean prediction: every SGD step does
    w -= lr / units.

    ``optimizer`` defaults to ``SGD(lr)``.
    """
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(units, use_bias=False, kernel_initializer="zeros"),
    ])
    model.compile(optimizer=optimizer or keras.optimizers.SGD(lr), loss=mean_output,
                  steps_per_execution=steps_per_execution)
    return model


def weight(model):
    """The probe model's single weight."""
    return float(model.layers[0].kernel.numpy()[0, 0])


def steps_in(model):
    """Steps an SGD(1) probe model (``lr_probe_model(lr=1.0)``) has taken."""
    return round(-weight(model))


def fit_probe(model, callbacks, epochs):
    """One step an epoch of a probe model: input 1, batch 4, no shuffling."""
    x = np.ones((4, 1), "float32")
    return model.fit(x, x, batch_size=4, epochs=epochs, verbose=0, shuffle=False,
                     callbacks=callbacks)


def overfit_data():
    """A real over-fitting problem: 24 noisy samples of a linear function of 8
    features, and 24 more for validation (``x, y, x_val, y_val``)."""
    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 1))
    x, xv = rng.normal(size=(24, 8)), rng.normal(size=(24, 8))
    y = x @ w + rng.normal(size=(24, 1))
    yv = xv @ w + rng.normal(size=(24, 1))
    return [a.astype("float32") for a in (x, y, xv, yv)]


def overfit_model():
    """A 64-unit layer for :func:`overfit_data`, initialised from NumPy (the
    same weights on every backend), not compiled."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(1)])
    return numpy_initialized(model)


class ScriptedLogs(keras.callbacks.Callback):
    """Writes a scripted value into the epoch logs; placed before the callbacks
    under test, which see the same logs dict."""

    def __init__(self, values, key="val_loss"):
        super().__init__()
        self.values = values
        self.key = key

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class CrashAfter(keras.callbacks.Callback):
    """Raises ``RuntimeError("crash")`` at the end of epoch ``epoch``: a crash
    inside ``model.fit``, which then calls no other hook."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("crash")


class FakeClock:
    """A clock for injection: time moves only when a test moves it."""

    def __init__(self, start=0.0):
        self.now = start

    def __call__(self):
        return self.now


class TickClock:
    """A clock that moves ``seconds`` at every reading: a run timed by it takes
    the same decisions on every machine, however fast."""

    def __init__(self, seconds=0.003):
        self.now, self.seconds = 0.0, seconds

    def __call__(self):
        self.now += self.seconds
        return self.now


class AdvanceClock(keras.callbacks.Callback):
    """Advances a FakeClock by ``seconds`` after each execution."""

    def __init__(self, clock, seconds=1.0):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def on_train_batch_end(self, batch, logs=None):
        self.clock.now += self.seconds


def numpy_initialized(model, seed=1):
    """Sets every weight of a built model from NumPy's generator (Glorot
    uniform kernels, zero biases), so a run starts from the same weights and
    gives the same curve under every Keras backend."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = []
    for w in model.get_weights():
        if w.ndim >= 2:
            fan = w.shape[-2] + w.shape[-1]
            values.append((rng.uniform(-1, 1, w.shape) * np.sqrt(6 / fan)).astype(w.dtype))
        else:
            values.append(np.zeros_like(w))
    model.set_weights(values)
    return model


def steps_per_execution(n):
    """``n``, or 1 under Keras's torch backend, which runs one step per execution."""
    return 1 if keras.backend.backend() == "torch" else n


# For tests about several steps in one execution.
multi_step_executions = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras's torch backend runs one step per execution")


def kill_chain(mode, root, plan, timeout=300):
    """Runs ``tests/callbacks/_scripts/kill_chain.py``: once uninterrupted,
    then as a chain of processes on one work folder, each killed as ``plan``
    says (a list of extra arguments, e.g. ``["--kill-at-op", "3"]``), then
    one to the end. Returns ``(reference, resumed, kills)``: the two
    results (with ``lr_history``, the last learning rate logged for each
    epoch) and the number of processes that died by SIGKILL."""
    import json
    import os
    import signal
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "callbacks", "_scripts", "kill_chain.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def run(work, extra):
        os.makedirs(work, exist_ok=True)
        out = os.path.join(work, "result.json")
        done = subprocess.run([sys.executable, script, mode, out, work, *extra], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"{extra}: exit {done.returncode}\n{done.stderr[-3000:]}")
        return done.returncode

    def result(work):
        with open(os.path.join(work, "result.json")) as f:
            found = json.load(f)
        history = {}
        with open(os.path.join(work, "lr.jsonl")) as f:
            for line in f:
                epoch, rate = json.loads(line)
                history[epoch] = rate
        found["lr_history"] = [history[e] for e in sorted(history)]
        return found

    reference_dir, chain_dir = os.path.join(root, "reference"), os.path.join(root, "chain")
    run(reference_dir, [])
    kills, finished = 0, False
    for extra in plan:
        code = run(chain_dir, extra)
        if code == 0:
            finished = True
            break
        kills += 1
    if not finished:
        run(chain_dir, [])
    return result(reference_dir), result(chain_dir), kills


def assert_same_run(reference, resumed):
    """The decisions, the LR history and the final weights of two runs are identical."""
    import numpy as np

    for key in ("stopped_epoch", "best_epoch", "best", "stop_reason", "cuts", "lr_history"):
        assert resumed[key] == reference[key], (key, resumed[key], reference[key])
    assert resumed["epochs"] == reference["epochs"][len(reference["epochs"])
                                                   - len(resumed["epochs"]):]
    for a, b in zip(resumed["final_weights"], reference["final_weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))


# Optimizers that average the weights (use_ema=True, ScheduleFreeAdamW) ---------

SCHEDULE_FREE = getattr(keras.optimizers, "ScheduleFreeAdamW", None)

# Parametrize a test over both kinds of averaging: "ema" and "schedule_free"
# (skipped, with the reason, on a Keras without ScheduleFreeAdamW).
AVERAGING = [
    pytest.param("ema", id="ema"),
    pytest.param("schedule_free", id="schedule_free", marks=pytest.mark.skipif(
        SCHEDULE_FREE is None,
        reason=f"Keras {keras.__version__} has no keras.optimizers.ScheduleFreeAdamW")),
]


def averaging_optimizer(kind, learning_rate=None):
    """``Adam(use_ema=True)`` with a short memory (``ema_momentum=0.9``, so a
    few epochs of a small problem show a clear gap between the average and
    the raw weights), or ``ScheduleFreeAdamW``. The default rates (0.05,
    0.2) make :func:`overfit_data` over-fit within 40 epochs under every
    backend (Keras's ScheduleFreeAdamW takes other steps on each)."""
    if learning_rate is None:
        learning_rate = 0.05 if kind == "ema" else 0.2
    if kind == "ema":
        return keras.optimizers.Adam(learning_rate, use_ema=True, ema_momentum=0.9)
    return SCHEDULE_FREE(learning_rate)


def averaged_model(kind, learning_rate=None):
    """A small compiled model for :func:`overfit_data` (8 -> 4 relu -> 1, mse),
    initialised from NumPy, with an averaging optimizer."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1)])
    numpy_initialized(model)
    model.compile(averaging_optimizer(kind, learning_rate), "mse")
    return model


def fit_overfit(model, callbacks, epochs, **kwargs):
    """``model.fit`` on :func:`overfit_data`: batches of 8, no shuffling,
    validated every epoch."""
    x, y, xv, yv = overfit_data()
    return model.fit(x, y, batch_size=8, epochs=epochs, validation_data=(xv, yv),
                     shuffle=False, verbose=0, callbacks=callbacks, **kwargs)


def evaluate_overfit(model):
    """The model's loss on :func:`overfit_data`'s validation half."""
    _, _, xv, yv = overfit_data()
    return float(model.evaluate(xv, yv, batch_size=8, verbose=0))


def digits(n_val=300):
    """scikit-learn's digits, shuffled once: ``(x, y, x_val, y_val)``, 64 features."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x = (d.data[order] / 16.0).astype("float32")
    y = d.target[order].astype("int32")
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


class CutLR(KitCallback):
    """Halves the LR at the end of ``epoch`` and records it, like CurveBasedLR."""

    def __init__(self, epoch=1, reason="plateau"):
        super().__init__()
        self.epoch, self.reason = epoch, reason

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            old_lr, new_lr = _lr_control.scale_learning_rate(self.model, 0.5)
            self.record_event("lr_cut", epoch, self.reason, old_lr=old_lr, new_lr=new_lr)


class TracksBest(KitCallback):
    """Exposes best_epoch/best_value like EarlyStopping and records "best";
    with ``record_stops``, also a stop that another callback made."""

    def __init__(self, monitor="val_loss", record_stops=False):
        super().__init__()
        self.monitor, self.record_stops = monitor, record_stops

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best_epoch = self.best_value = self.stop_reason = self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = logs[self.monitor]
        if self.best_value is None or value < self.best_value:
            self.best_epoch, self.best_value = epoch, value
            self.record_event("best", epoch, "improved", value=value)
        if self.record_stops and self.model.stop_training:
            self.stop_reason, self.stopped_epoch = "stopped by another callback", epoch
            self.record_event("stop", epoch, self.stop_reason, value=value)
