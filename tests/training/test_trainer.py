"""Trainer numerics: parity with model.fit, two replicas vs one, clipping,
accumulation, mixed precision, XLA, evaluate.

tests/conftest.py splits the CPU into two logical devices, so
MirroredStrategy(["/cpu:0", "/cpu:1"]) runs two real replicas here.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from kit_testing import two_replicas

from kerastune_kit import Trainer


def data(n=50, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1)) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def mlp(regularizer=None, seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="tanh", kernel_regularizer=regularizer),
        keras.layers.Dense(1, kernel_regularizer=regularizer),
    ])


def train_traces(trainer):
    return {k: v for k, v in trainer.trace_counts().items() if k.startswith("train/")}


def max_diff(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b))


def fit_both(config, x, y, batch_size=8, epochs=3):
    """The same run on one replica and on two with the same global batch."""
    config = dict(config)
    optimizer = config.pop("optimizer", lambda: keras.optimizers.SGD(0.1))
    runs = []
    for strategy in ("default", two_replicas()):
        trainer = Trainer(lambda: mlp(keras.regularizers.L2(0.01)), optimizer, "mse",
                          metrics=["mae"], strategy=strategy, steps_per_execution=2, **config)
        history = trainer.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False)
        runs.append((trainer, history.history, trainer.model.get_weights()))
    return runs


@pytest.mark.parametrize("config", [
    {},                                   # regularized model, partial last batch
    {"clipnorm": 0.05},                   # clipping after the cross-replica sum
    {"gradient_accumulation_steps": 2},   # accumulation across replicas
    # Clipping loss-scaled gradients. A scale low enough for float16 sums
    # over 8 examples not to overflow: a skipped step would be legitimate
    # but differ between 8 examples on one replica and 4 + 4 on two.
    {"clipnorm": 0.05, "mixed_precision": "mixed_float16",
     "optimizer": lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1),
                                                              initial_scale=256.0)},
], ids=["regularized-partial-batch", "clipnorm", "accumulation", "float16-clipnorm"])
def test_two_replicas_match_one_replica(config):
    x, y = data(n=45)  # Last global batch of 5: split 3 + 2 over the replicas.
    (one, h1, w1), (two, h2, w2) = fit_both(config, x, y)
    assert two.strategy.num_replicas_in_sync == 2
    tolerance = 1e-3 if "mixed_precision" in config else 1e-4  # float16 forward pass
    np.testing.assert_allclose(h2["loss"], h1["loss"], atol=tolerance)
    np.testing.assert_allclose(h2["mae"], h1["mae"], atol=tolerance)
    assert max_diff(w1, w2) < tolerance
    assert int(two.optimizer.iterations.numpy()) == int(one.optimizer.iterations.numpy())
    # The reported loss is the true mean plus the penalty, on both.
    prediction = ops.convert_to_numpy(one.model(x))
    penalty = sum(float(ops.convert_to_numpy(loss)) for loss in one.model.losses)
    expected = float(np.mean((prediction - y) ** 2)) + penalty
    assert penalty > 1e-3
    assert one.evaluate(x, y, batch_size=8)["loss"] == pytest.approx(expected, rel=tolerance)
    assert two.evaluate(x, y, batch_size=8)["loss"] == pytest.approx(expected, rel=tolerance)
    if "mixed_precision" in config:
        assert float(two.optimizer.dynamic_scale.numpy()) == 256.0  # No step skipped.
    elif "clipnorm" in config:  # The clip was active: unclipped runs end elsewhere.
        unclipped = Trainer(lambda: mlp(keras.regularizers.L2(0.01)),
                            lambda: keras.optimizers.SGD(0.1), "mse", steps_per_execution=2)
        unclipped.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
        assert max_diff(unclipped.model.get_weights(), w1) > 1e-2


def lr_probe(lr=0.0):
    """One weight w on input 1, loss = prediction: each SGD step moves w by -lr * grad."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((2,)),
                             keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])


def mean_prediction(y_true, y_pred):
    return ops.mean(y_pred, axis=-1)


def test_clipnorm_clips_the_global_norm_in_closed_form():
    # loss = mean over the batch of x.w, so the gradient is mean(x) = (3, 4):
    # norm 5, clipped to 1 -> (0.6, 0.8); one SGD step at lr 0.5.
    x = np.array([[2.0, 4.0], [4.0, 4.0]], "float32")
    trainer = Trainer(lr_probe, lambda: keras.optimizers.SGD(0.5), mean_prediction, clipnorm=1.0,
                      strategy=two_replicas())
    trainer.fit(x, np.zeros((2, 1), "float32"), batch_size=2, verbose=0, shuffle=False)
    np.testing.assert_allclose(trainer.model.get_weights()[0][:, 0], [-0.3, -0.4], atol=1e-6)


def test_accumulation_equals_one_step_on_a_k_times_bigger_batch():
    x, y = data(n=12)
    big = Trainer(mlp(), keras.optimizers.SGD(0.1), "mse")
    big.fit(x, y, batch_size=12, verbose=0, shuffle=False)
    accumulated = Trainer(mlp(), keras.optimizers.SGD(0.1), "mse",
                          gradient_accumulation_steps=3, steps_per_execution=2)
    accumulated.fit(x, y, batch_size=4, verbose=0, shuffle=False)
    assert int(accumulated.optimizer.iterations.numpy()) == 1
    assert max_diff(big.model.get_weights(), accumulated.model.get_weights()) < 1e-6


def test_evaluate_matches_model_evaluate():
    x, y = data()
    model = mlp(keras.regularizers.L2(0.01))
    model.compile(keras.optimizers.SGD(0.1), "mse", metrics=["mae", "mse"])
    expected = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    trainer = Trainer(model, keras.optimizers.SGD(0.1), "mse", metrics=["mae", "mse"],
                      steps_per_execution=2)
    logs = trainer.evaluate(x, y, batch_size=16)
    assert list(logs) == ["loss", "mae", "mse"]
    for key in expected:
        assert logs[key] == pytest.approx(expected[key], abs=1e-5)
    assert trainer.evaluate(x, y, batch_size=16, return_dict=False) == pytest.approx(
        [logs["loss"], logs["mae"], logs["mse"]], abs=1e-6)


def test_accuracy_resolves_like_compile():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    labels = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    expected = model.evaluate(x, labels, verbose=0, return_dict=True)
    trainer = Trainer(model, "sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    logs = trainer.evaluate(x, labels)
    assert logs["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert logs["loss"] == pytest.approx(expected["loss"], abs=1e-5)


@pytest.mark.parametrize("strategy", ["one_device", "two_replicas"])
def test_jit_compile_gives_the_same_run(strategy):
    # One device: the whole step is one XLA function; two replicas: the
    # forward and backward pass (a cross-replica sum cannot sit inside it).
    x, y = data(n=40)
    plain = Trainer(mlp(), keras.optimizers.SGD(0.05), "mse", steps_per_execution=4)
    expected = plain.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history["loss"]
    jitted = Trainer(mlp, lambda: keras.optimizers.SGD(0.05), "mse", steps_per_execution=4,
                     jit_compile=True,
                     strategy=two_replicas() if strategy == "two_replicas" else strategy)
    history = jitted.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history["loss"]
    assert jitted._builder._jit_whole_step == (strategy == "one_device")
    np.testing.assert_allclose(history, expected, rtol=1e-5)
    assert max_diff(plain.model.get_weights(), jitted.model.get_weights()) < 1e-5


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_matches_model_fit_under_the_same_policy(policy):
    x, y = data(n=64)
    keras.config.set_dtype_policy(policy)
    try:
        reference = mlp()
    finally:
        keras.config.set_dtype_policy("float32")
    reference.compile(keras.optimizers.SGD(0.05), "mse")  # Keras adds loss scaling itself.
    expected = reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    trainer = Trainer(mlp, lambda: keras.optimizers.SGD(0.05), "mse", mixed_precision=policy)
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert keras.config.dtype_policy().name == "float32"  # Global policy restored.
    assert trainer.model.layers[0].compute_dtype == policy.split("_")[1]
    scaled = isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-3)
    assert max_diff(trainer.model.get_weights(), reference.get_weights()) < 1e-3
    if scaled:
        assert float(trainer.optimizer.dynamic_scale.numpy()) == pytest.approx(
            float(reference.optimizer.dynamic_scale.numpy()))


def test_mixed_precision_needs_the_model_built_under_the_policy():
    with pytest.raises(ValueError, match=r"set_dtype_policy\('mixed_float16'\)"):
        Trainer(mlp(), "sgd", "mse", mixed_precision="mixed_float16")


def test_steps_per_epoch_runs_one_iterator_across_epochs():
    x, y = data(n=56)  # 7 batches of 8.
    repeated = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    trainer = Trainer(mlp(), keras.optimizers.SGD(0.05), "mse", steps_per_execution=2)
    history = trainer.fit(repeated, epochs=3, steps_per_epoch=5, verbose=0)
    assert len(history.history["loss"]) == 3
    assert int(trainer.optimizer.iterations.numpy()) == 15
    assert train_traces(trainer) == {"train/exact": 1}  # Infinite data: no per-step guard.
    # The same 15 batches as one run over the repeated data without epochs.
    reference = Trainer(mlp(), keras.optimizers.SGD(0.05), "mse")
    reference.fit(repeated.take(15), verbose=0)
    assert max_diff(trainer.model.get_weights(), reference.model.get_weights()) < 1e-6

    # Finite data (7 batches) and steps_per_epoch=5: as model.fit, an epoch
    # ends where the data does, with a warning, and the next epoch reads the
    # data from its start: 5 + 2 + 5 steps.
    finite = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    reference = mlp()
    reference.compile(keras.optimizers.SGD(0.05), "mse")
    expected = reference.fit(finite, epochs=3, steps_per_epoch=5, verbose=0)
    dry = Trainer(mlp(), keras.optimizers.SGD(0.05), "mse", steps_per_execution=2)
    with pytest.warns(RuntimeWarning, match=r"input ran out of data after 2 of "
                                            r"steps_per_epoch=5 steps in epoch 2; it ends"):
        history = dry.fit(finite, epochs=3, steps_per_epoch=5, verbose=0)
    assert len(history.history["loss"]) == 3
    assert int(dry.optimizer.iterations.numpy()) == int(reference.optimizer.iterations) == 12
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], atol=1e-5)
    assert max_diff(dry.model.get_weights(), reference.get_weights()) < 1e-5
