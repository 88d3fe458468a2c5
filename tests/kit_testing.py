"""Small real-Keras helpers shared by the test modules (not a test module)."""

import keras
import pytest
from keras import ops


def lr_probe_model(optimizer=None, steps_per_execution=1, lr=0.0):
    """One weight w, input 1, loss = prediction: every SGD step does w -= lr.

    ``optimizer`` defaults to ``SGD(lr)``.
    """
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros"),
    ])
    model.compile(optimizer=optimizer or keras.optimizers.SGD(lr),
                  loss=lambda y_true, y_pred: ops.mean(y_pred, axis=-1),
                  steps_per_execution=steps_per_execution)
    return model


def weight(model):
    """The probe model's single weight."""
    return float(model.layers[0].kernel.numpy()[0, 0])


class ScriptedLogs(keras.callbacks.Callback):
    """Writes a scripted value into the epoch logs; placed before the callbacks
    under test, which see the same logs dict."""

    def __init__(self, values, key="val_loss"):
        super().__init__()
        self.values = values
        self.key = key

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class FakeClock:
    """A clock for injection: time moves only when a test moves it."""

    def __init__(self, start=0.0):
        self.now = start

    def __call__(self):
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
