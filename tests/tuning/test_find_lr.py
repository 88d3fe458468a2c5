"""find_lr on real small models, and LRFinderResult's suggestions and plot."""

import math
import sys

import keras
import numpy as np
import pytest
from keras import ops
from kit_testing import steps_per_execution

import kerastune_kit
from kerastune_kit.tuning import LRFinderResult, find_lr


def regression_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]])).astype("float32")
    return x, y


def mlp(optimizer, **compile_kwargs):
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"], **compile_kwargs)
    return model


def numpy_of(variables):
    return [np.array(v.numpy(), copy=True) for v in variables]


def all_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def model_state(model):
    optimizer = model.optimizer
    return {
        "variables": numpy_of(model.variables),
        "metrics": numpy_of(model.metrics_variables),
        "optimizer_variables": numpy_of(optimizer.variables),
        "optimizer_built": optimizer.built,
        "optimizer": optimizer,
        "learning_rate": optimizer._learning_rate,
        "train_function": model.train_function,
        "stop_training": getattr(model, "stop_training", None),
        "steps_per_execution": model.steps_per_execution,
        "history": getattr(model, "history", None),
    }


def assert_same_state(before, after):
    for key in ("variables", "metrics", "optimizer_variables"):
        assert all_equal(before[key], after[key]), key
    for key in ("optimizer", "learning_rate", "train_function", "history"):
        assert before[key] is after[key], key
    for key in ("optimizer_built", "stop_training", "steps_per_execution"):
        assert before[key] == after[key], key


def test_built_optimizer_and_model_are_restored_bit_for_bit():
    x, y = regression_data()
    model = mlp(keras.optimizers.Adam(1e-3), steps_per_execution=steps_per_execution(4))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # builds Adam's slots
    before = model_state(model)
    assert before["optimizer_built"] and int(model.optimizer.iterations.numpy()) == 8

    result = find_lr(model, x, y, steps=40, batch_size=32, min_lr=1e-5, max_lr=10.0)

    assert_same_state(before, model_state(model))
    assert 3 <= len(result.lrs) <= 40 and len(result.losses) == len(result.lrs)
    assert result.suggestion is not None and math.isfinite(result.suggestion)
    assert 1e-5 <= result.suggestion <= 10.0
    # The rates rise geometrically from min_lr, one per step.
    ratios = result.lrs[1:] / result.lrs[:-1]
    assert result.lrs[0] == pytest.approx(1e-5)
    assert ratios == pytest.approx(np.full(ratios.shape, (10.0 / 1e-5) ** (1 / 39)), rel=1e-4)


def test_fresh_model_trains_afterwards_exactly_as_without_the_test():
    x, y = regression_data()
    keras.utils.set_random_seed(7)
    plain = mlp(keras.optimizers.Adam(1e-2))
    keras.utils.set_random_seed(7)
    tested = mlp(keras.optimizers.Adam(1e-2))
    assert all_equal(numpy_of(plain.variables), numpy_of(tested.variables))
    before = model_state(tested)
    assert not before["optimizer_built"]

    result = find_lr(tested, x, y, steps=30, batch_size=64)

    after = model_state(tested)
    # The compiled metrics (mae) were built by the test's fit, as the first
    # fit builds them; they are left in their reset state.
    built_metrics = after["metrics"][len(before["metrics"]):]
    assert built_metrics and all(not m.any() for m in built_metrics)
    after["metrics"] = after["metrics"][:len(before["metrics"])]
    assert_same_state(before, after)
    assert result.suggestion is not None and 1e-7 <= result.suggestion <= 10.0
    # Same weights, same (unbuilt) optimizer, same seed-generator state:
    # training afterwards is identical to training a twin that never ran it.
    # Both start training from the same global seed: Keras's torch backend
    # draws unseeded dropout masks from torch's global generator, and fit
    # builds a model's metrics (which draws too) before on_train_begin.
    reseed = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: keras.utils.set_random_seed(11))
    for model in (plain, tested):
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[reseed])
    assert all_equal(numpy_of(plain.variables), numpy_of(tested.variables))
    assert all_equal(numpy_of(plain.optimizer.variables), numpy_of(tested.optimizer.variables))


def probe_model():
    """One weight w, input 1, loss = prediction: every SGD step does w -= lr."""
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=lambda y_true, y_pred: ops.mean(y_pred, axis=-1))
    return model


@pytest.mark.parametrize("mode", ["exponential", "linear"])
def test_each_steps_loss_and_rate_are_recorded(mode):
    # The loss of step k is w before it, i.e. minus the sum of the rates of
    # the steps before: this checks the ramp, that every step is recorded
    # (not a running mean), and the bias-corrected smoothing.
    model = probe_model()
    x = np.ones((8, 1), "float32")
    steps = 12
    result = find_lr(model, x, x, batch_size=4, steps=steps, min_lr=1e-3, max_lr=1.0,
                     mode=mode, smoothing=0.9)
    k = np.arange(steps)
    if mode == "exponential":
        expected_lrs = 1e-3 * 1000.0 ** (k / (steps - 1))
    else:
        expected_lrs = 1e-3 + (1.0 - 1e-3) * k / (steps - 1)
    assert result.lrs == pytest.approx(expected_lrs, rel=1e-5)
    expected_raw = -np.concatenate([[0.0], np.cumsum(result.lrs)[:-1]])
    assert result.raw_losses == pytest.approx(expected_raw, rel=1e-5, abs=1e-7)
    average, smoothed = 0.0, []
    for i, loss in enumerate(expected_raw):
        average = 0.9 * average + 0.1 * loss
        smoothed.append(average / (1 - 0.9 ** (i + 1)))
    assert result.losses == pytest.approx(smoothed, rel=1e-5, abs=1e-7)
    assert not result.stopped_early
    assert float(model.layers[0].kernel.numpy()[0, 0]) == 0.0


def test_stops_when_the_loss_diverges_and_never_suggests_the_blow_up():
    x, y = regression_data(n=128)
    model = mlp(keras.optimizers.SGD(0.01))
    result = find_lr(model, x, y, steps=100, batch_size=32, min_lr=1e-4, max_lr=1e3,
                     smoothing=0.5)
    assert result.stopped_early and len(result.losses) < 100
    last = result.losses[-1]
    assert not math.isfinite(last) or last > 4.0 * np.nanmin(result.losses[:-1])
    for method in ("valley", "steepest", "minimum"):
        suggestion = result.suggest(method)
        assert 1e-4 <= suggestion <= 1e3
        assert suggestion < result.lrs[-1]
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)


def test_restored_after_an_error_during_the_test():
    class FailsInTraining(keras.layers.Layer):
        def call(self, inputs, training=None):
            if training:
                raise RuntimeError("broken train step")
            return inputs

    x, y = regression_data(n=64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1), FailsInTraining()])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    before = model_state(model)
    with pytest.raises(RuntimeError, match="broken train step"):
        find_lr(model, x, y, steps=10)
    assert_same_state(before, model_state(model))


def test_mismatched_sample_counts_are_refused():
    x, y = regression_data(n=64)
    with pytest.raises(ValueError, match="same number of samples"):
        find_lr(mlp(keras.optimizers.SGD(0.01)), x, y[:10], steps=10)


def test_dataset_input_is_repeated():
    import tensorflow as tf

    model = probe_model()
    ones = np.ones((8, 1), "float32")
    dataset = tf.data.Dataset.from_tensor_slices((ones, ones)).batch(4)  # 2 batches
    result = find_lr(model, dataset, steps=9, min_lr=1e-3, max_lr=1.0, smoothing=0.0)
    assert len(result.lrs) == 9
    assert result.raw_losses == pytest.approx(
        -np.concatenate([[0.0], np.cumsum(result.lrs)[:-1]]), rel=1e-5, abs=1e-7)


def test_loss_scale_optimizer_is_rebuilt_not_touched():
    x, y = regression_data(n=64)
    model = mlp(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01)))
    model.fit(x, y, epochs=1, verbose=0)  # builds the optimizer and the metrics
    before = model_state(model)
    result = find_lr(model, x, y, steps=10, batch_size=16)
    assert_same_state(before, model_state(model))
    assert len(result.lrs) == 10


@pytest.mark.tensorflow
def test_mirrored_strategy_model_is_restored():
    import tensorflow as tf

    x, y = regression_data(n=128)
    # Reduction to one device uses no collective ops, whose instance keys
    # would clash with other MirroredStrategy objects of this process.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        model = mlp(keras.optimizers.Adam(1e-3))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    before = model_state(model)
    result = find_lr(model, x, y, steps=12, batch_size=32)
    assert_same_state(before, model_state(model))
    assert len(result.lrs) >= 3 and result.suggestion is not None


def test_exported_from_the_package():
    assert kerastune_kit.find_lr is find_lr
    assert kerastune_kit.tuning.LRFinderResult is LRFinderResult


# LRFinderResult --------------------------------------------------------------


def synthetic_curve():
    lrs = np.logspace(-6, 1, 50)
    t = np.log10(lrs)
    # Flat, a steep descent centred at 1e-3, a bottom at ~1e-1, a blow-up.
    losses = 1.0 - 0.8 / (1.0 + np.exp(-3.0 * (t + 3.0))) + 0.5 * np.maximum(t + 1.0, 0) ** 2
    return lrs, losses


def test_suggestion_methods_on_a_known_curve():
    lrs, losses = synthetic_curve()
    result = LRFinderResult(lrs, losses)
    steepest = result.suggest("steepest")
    gradient = np.gradient(losses, np.log(lrs))
    assert steepest == pytest.approx(lrs[np.argmin(gradient[5:-2]) + 5])
    assert steepest == pytest.approx(1e-3, rel=0.4)
    assert result.suggest("minimum") == pytest.approx(lrs[np.argmin(losses)] / 10)
    # The whole flat-then-descending part is one decreasing run; the valley
    # point is two thirds of the way down it, below the minimum's rate.
    bottom = int(np.argmin(losses))
    assert result.suggestion == result.suggest("valley")
    assert result.suggestion == pytest.approx(lrs[int(round(2 * bottom / 3))])
    assert result.suggestion < lrs[bottom]


def test_valley_is_the_longest_decreasing_run():
    lrs = np.logspace(-5, 0, 12)
    # A short dip (indices 0-2), a bump, then a long descent (3-10), a blow-up.
    losses = np.array([3.0, 2.0, 1.9, 5.0, 4.5, 4.0, 3.5, 3.0, 2.5, 1.0, 0.5, 9.0])
    assert LRFinderResult(lrs, losses).suggestion == pytest.approx(lrs[8])


def test_non_finite_points_are_never_suggested():
    lrs = np.logspace(-5, 0, 10)
    losses = np.array([2.0, 1.8, np.nan, 1.2, np.inf, 0.6, 0.5, np.nan, 3.0, np.nan])
    result = LRFinderResult(lrs, losses)
    finite_lrs = set(lrs[np.isfinite(losses)])
    for method in ("valley", "steepest"):
        assert result.suggest(method) in finite_lrs
    assert result.suggest("minimum") == pytest.approx(lrs[6] / 10)
    assert LRFinderResult(lrs[:3], np.full(3, np.nan)).suggestion is None


def test_minimum_suggestion_is_clipped_to_the_range():
    lrs = np.logspace(-5, 0, 5)
    result = LRFinderResult(lrs, np.array([0.1, 1.0, 2.0, 3.0, 4.0]), method="minimum")
    assert result.suggestion == pytest.approx(1e-5)


def test_plot_writes_a_png(tmp_path):
    lrs, losses = synthetic_curve()
    path = tmp_path / "lr_range.png"
    fig, ax = LRFinderResult(lrs, losses).plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ax.get_xscale() == "log" and len(ax.lines) == 2  # curve and suggestion
    assert fig is ax.figure


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    lrs, losses = synthetic_curve()
    result = LRFinderResult(lrs, losses)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if absent
    with pytest.raises(ImportError, match="pip install matplotlib"):
        result.plot()


# Bad arguments ---------------------------------------------------------------


@pytest.mark.parametrize("kwargs, arg", [
    (dict(min_lr=0.0), "min_lr"),
    (dict(min_lr=-1.0), "min_lr"),
    (dict(max_lr=1e-8), "max_lr"),
    (dict(steps=2), "steps"),
    (dict(mode="cosine"), "mode"),
    (dict(smoothing=1.0), "smoothing"),
    (dict(divergence=1.0), "divergence"),
    (dict(suggest="median"), "suggest"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_arguments(kwargs, arg):
    model = probe_model()
    x = np.ones((4, 1), "float32")
    with pytest.raises(ValueError, match=f"`{arg}`"):
        find_lr(model, x, x, **kwargs)


def test_uncompiled_or_unbuilt_model_is_refused():
    x = np.ones((4, 1), "float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="compile"):
        find_lr(model, x, x)
    unbuilt = keras.Sequential([keras.layers.Dense(1)])
    unbuilt.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="not built"):
        find_lr(unbuilt, x, x)


def test_the_callback_gives_the_rate_back_with_the_weights():
    """LRRangeTest(set_rate=True) ramps the rate through the kit's LR
    control; afterwards a step runs at the compiled rate again: w -= 0.5."""
    from kerastune_kit.tuning import LRRangeTest

    model = probe_model()
    x = np.ones((4, 1), "float32")
    test = LRRangeTest(1e-4, 10.0, steps=5)
    model.fit(x, x, batch_size=4, epochs=20, verbose=0, callbacks=[test])
    assert len(test.lrs) == 5 and test.lrs[-1] == pytest.approx(10.0)
    assert model.get_weights()[0].item() == 0.0
    model.fit(x, x, batch_size=4, epochs=1, verbose=0)
    assert model.get_weights()[0].item() == -0.5
