"""The Trainer as a drop-in for model.fit, model.evaluate and model.predict:
everything they accept, with their meaning, and nothing traced twice.

Each run is compared with Keras's own on the same data: the losses and
metrics of every epoch and the final weights agree within 1e-5.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from kit_testing import two_replicas

from kerastune_kit import Trainer

TOLERANCE = 1e-5


def two_output_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = {"digit": rng.integers(0, 3, size=(n,)).astype("int32"),
         "size": rng.normal(size=(n, 1)).astype("float32")}
    return x, y, rng.uniform(0.5, 2.0, size=(n,)).astype("float32")


def two_output_model(outputs="dict"):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    digit = keras.layers.Dense(3, activation="softmax", name="digit")(hidden)
    size = keras.layers.Dense(1, name="size")(hidden)
    return keras.Model(inputs, {"digit": digit, "size": size} if outputs == "dict"
                       else [digit, size])


def compile_arguments(outputs="dict"):
    """Per-output losses, loss weights, metrics and weighted metrics."""
    if outputs == "dict":
        return {"loss": {"digit": "sparse_categorical_crossentropy", "size": "mse"},
                "loss_weights": {"digit": 1.0, "size": 0.5},
                "metrics": {"digit": ["accuracy"], "size": ["mae"]},
                "weighted_metrics": {"size": ["mse"]}}
    return {"loss": ["sparse_categorical_crossentropy", "mse"], "loss_weights": [1.0, 0.5],
            "metrics": [["accuracy"], ["mae"]], "weighted_metrics": [[], ["mse"]]}


def assert_same_run(history, expected, model, reference, keys=None):
    assert set(history) == set(expected)
    for key in keys or expected:
        np.testing.assert_allclose(history[key], expected[key], atol=TOLERANCE, err_msg=key)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, atol=TOLERANCE)


def keras_run(x, y, outputs="dict", strategy=None, **fit):
    if strategy is None:
        reference = two_output_model(outputs)
        reference.compile(keras.optimizers.SGD(0.1), **compile_arguments(outputs))
    else:
        with strategy.scope():
            reference = two_output_model(outputs)
            reference.compile(keras.optimizers.SGD(0.1), **compile_arguments(outputs))
    return reference.fit(x, y, verbose=0, **fit).history, reference


@pytest.mark.parametrize("outputs", ["dict", "list"])
def test_two_outputs_with_weights_and_a_validation_split_match_model_fit(outputs):
    # 55 examples: 44 train in 5 batches of 8 and one of 4, 11 validation in
    # one of 8 and one of 3; partial executions of 3 steps.
    x, y, weights = two_output_data(55)
    if outputs == "list":
        y = [y["digit"], y["size"]]
    fit = {"batch_size": 8, "epochs": 3, "validation_split": 0.2, "sample_weight": weights,
           "shuffle": False}
    expected, reference = keras_run(x, y, outputs, **fit)
    trainer = Trainer(two_output_model(outputs), keras.optimizers.SGD(0.1),
                      **compile_arguments(outputs), steps_per_execution=3)
    history = trainer.fit(x, y, verbose=0, **fit).history
    # model.fit's keys: the loss, the loss and metrics of each output, val_ ones.
    assert {"loss", "val_loss", "digit_loss", "size_loss", "digit_accuracy", "size_mae",
            "size_mse", "val_size_mse"} <= set(history)
    assert_same_run(history, expected, trainer.model, reference)


@pytest.mark.slow
def test_two_outputs_on_two_replicas_match_model_fit():
    # Full batches (48 train, 16 validation, batch 8): the same run as one device.
    x, y, weights = two_output_data(64)
    fit = {"batch_size": 8, "epochs": 3, "validation_split": 0.25, "sample_weight": weights,
           "shuffle": False}
    expected, reference = keras_run(x, y, **fit)
    trainer = Trainer(two_output_model, lambda: keras.optimizers.SGD(0.1),
                      **compile_arguments(), strategy=two_replicas(), steps_per_execution=2)
    history = trainer.fit(x, y, verbose=0, **fit).history
    assert trainer.strategy.num_replicas_in_sync == 2
    assert_same_run(history, expected, trainer.model, reference)

    # Partial validation batches (12 of them: 8 then 4): Keras's per-output
    # loss means weight each replica's batch alike, so compare with model.fit
    # on the same strategy; the rest still equals one device.
    x, y, weights = two_output_data(60, seed=1)
    fit["validation_split"] = 0.2
    one_device, _ = keras_run(x, y, **fit)
    mirrored, reference = keras_run(x, y, strategy=two_replicas(), **fit)
    trainer = Trainer(two_output_model, lambda: keras.optimizers.SGD(0.1),
                      **compile_arguments(), strategy=two_replicas(), steps_per_execution=2)
    history = trainer.fit(x, y, verbose=0, **fit).history
    assert_same_run(history, mirrored, trainer.model, reference)
    same_as_one_device = [k for k in history if k not in ("val_digit_loss", "val_size_loss")]
    for key in same_as_one_device:
        np.testing.assert_allclose(history[key], one_device[key], atol=TOLERANCE, err_msg=key)


def classification(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, rng.integers(0, 3, size=(n,)).astype("int32")


def classifier():
    keras.utils.set_random_seed(5)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])


CLASSIFIER = {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"],
              "weighted_metrics": ["accuracy"]}


def test_class_weight_matches_model_fit():
    x, y = classification()
    fit = {"batch_size": 8, "epochs": 3, "class_weight": {0: 1.0, 1: 3.0, 2: 0.5},
           "validation_data": (x[:16], y[:16]), "shuffle": False}
    reference = classifier()
    reference.compile(keras.optimizers.SGD(0.2), **CLASSIFIER)
    expected = reference.fit(x, y, verbose=0, **fit).history
    trainer = Trainer(classifier(), keras.optimizers.SGD(0.2), **CLASSIFIER)
    history = trainer.fit(x, y, verbose=0, **fit).history
    assert_same_run(history, expected, trainer.model, reference)
    # The weights mattered: without them the run ends elsewhere.
    plain = Trainer(classifier(), keras.optimizers.SGD(0.2), **CLASSIFIER)
    plain.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
    assert max(np.abs(a - b).max() for a, b in
               zip(plain.model.get_weights(), trainer.model.get_weights())) > 1e-3


class BatchOrder(keras.callbacks.Callback):
    """Each batch's mean input, from the running mean of the loss: with SGD(0)
    the probe's weight stays 1, the loss is the mean prediction = mean input."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = []
        self.means = getattr(self, "means", [])
        self.means.append(self.epoch)

    def on_train_batch_end(self, batch, logs=None):
        running = logs["loss"]
        # running = mean of batches 0..batch (equal sizes) -> this batch's mean
        self.epoch.append(running * (batch + 1) - sum(self.epoch))


def probe():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer="ones")])


def mean_prediction(y_true, y_pred):
    return keras.ops.mean(y_pred, axis=-1)


def test_shuffle_reads_every_example_once_per_epoch_in_a_new_order():
    x = np.arange(16, dtype="float32").reshape(16, 1)
    orders = {}
    for kind in ("trainer", "model.fit"):
        for shuffle in (True, False):
            order = BatchOrder()
            keras.utils.set_random_seed(7)  # the same shuffling seed for both
            if kind == "trainer":
                Trainer(probe(), keras.optimizers.SGD(0.0), mean_prediction).fit(
                    x, x, batch_size=4, epochs=3, shuffle=shuffle, verbose=0,
                    callbacks=[order])
            else:
                model = probe()
                model.compile(keras.optimizers.SGD(0.0), mean_prediction)
                model.fit(x, x, batch_size=4, epochs=3, shuffle=shuffle, verbose=0,
                          callbacks=[order])
            orders[kind, shuffle] = np.round(order.means, 4).tolist()
    in_order = [[1.5, 5.5, 9.5, 13.5]] * 3
    assert orders["trainer", False] == orders["model.fit", False] == in_order
    trainer, keras_fit = orders["trainer", True], orders["model.fit", True]
    # Every epoch sees every example once (the means add up), in another order.
    assert all(sum(epoch) == pytest.approx(30.0) for epoch in trainer)
    assert all(epoch != in_order[0] for epoch in trainer)
    # A new order at every epoch (each epoch's from the seed and the epoch, so
    # that a resumed run is exact). Keras's TensorFlow model.fit, with a seed
    # set, starts a new iterator each epoch and repeats its first order.
    assert trainer[0] != trainer[1] != trainer[2] != trainer[0]
    assert keras_fit[0] == keras_fit[1] == keras_fit[2]


def compiled_two_output_model(strategy=None):
    def build():
        model = two_output_model()
        model.compile(keras.optimizers.SGD(0.1), **compile_arguments())
        return model

    if strategy is None:
        return build()
    with strategy.scope():
        return build()


@pytest.mark.slow
def test_a_compiled_model_is_taken_as_it_is():
    x, y, weights = two_output_data(40)
    fit = {"batch_size": 8, "epochs": 2, "sample_weight": weights, "shuffle": False,
           "validation_split": 0.25}
    explicit = Trainer(two_output_model(), keras.optimizers.SGD(0.1), **compile_arguments())
    expected = explicit.fit(x, y, verbose=0, **fit).history
    for trainer in (Trainer.from_compiled(compiled_two_output_model()),
                    Trainer(compiled_two_output_model(), steps_per_execution=4),
                    Trainer.from_compiled(compiled_two_output_model(two_replicas()))):
        history = trainer.fit(x, y, verbose=0, **fit).history
        assert trainer.optimizer is trainer.model.optimizer
        assert_same_run(history, expected, trainer.model, explicit.model)
    assert trainer.strategy is two_replicas()  # the model's own strategy


def test_a_model_compiled_outside_the_strategy_scope_is_refused():
    with two_replicas().scope():
        model = two_output_model()
    model.compile(keras.optimizers.SGD(0.1), **compile_arguments())  # outside the scope
    with pytest.raises(ValueError, match=r"created outside the scope of the Trainer's "
                                         r"strategy \(MirroredStrategy\)"):
        Trainer.from_compiled(model, strategy=two_replicas())
    with pytest.raises(ValueError, match=r"from_compiled needs a keras.Model compiled"):
        Trainer.from_compiled(two_output_model())
    with pytest.raises(ValueError, match=r"this model is not compiled"):
        Trainer(two_output_model())
    with pytest.raises(ValueError, match=r"`optimizer` is needed with 'loss'"):
        Trainer(two_output_model(), loss="mse")


def test_a_second_identical_call_traces_nothing():
    x, y, weights = two_output_data(48)
    trainer = Trainer(two_output_model(), keras.optimizers.SGD(0.1), **compile_arguments(),
                      steps_per_execution=4)

    def calls():
        trainer.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y))
        trainer.evaluate(x, y, sample_weight=weights, verbose=0)
        trainer.predict(x, verbose=0)

    calls()
    first = trainer.trace_counts()
    # test: validation batches (x, y) and weighted (x, y, w) batches are two graphs
    assert first == {"train/exact": 1, "test/exact": 2, "predict/exact": 1}
    calls()
    assert trainer.trace_counts() == first
    # Another batch size: a second shape is traced once more into a general
    # trace, which serves any further shape.
    trainer.fit(x, y, batch_size=6, epochs=1, verbose=0)
    trainer.fit(x, y, batch_size=12, epochs=1, verbose=0)
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert trainer.trace_counts()["train/exact"] <= 2


@pytest.mark.parametrize("fit", [
    {"validation_split": 0.5},  # ignored next to validation_data, as by model.fit
    {"validation_freq": 2},
    {"validation_freq": [1, 3]},
    {"validation_steps": 1, "validation_batch_size": 5},
], ids=["split-and-data", "every-2", "epochs-1-and-3", "steps-and-batch-size"])
def test_validation_options_match_model_fit(fit):
    x, y = classification(n=32)
    fit = {"batch_size": 8, "epochs": 4, "validation_data": (x[:12], y[:12]),
           "shuffle": False, **fit}
    reference = classifier()
    reference.compile(keras.optimizers.SGD(0.2), **CLASSIFIER)
    expected = reference.fit(x, y, verbose=0, **fit).history
    trainer = Trainer(classifier(), keras.optimizers.SGD(0.2), **CLASSIFIER)
    history = trainer.fit(x, y, verbose=0, **fit).history
    assert {k: len(v) for k, v in history.items()} == {k: len(v) for k, v in expected.items()}
    assert_same_run(history, expected, trainer.model, reference)


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size
        self.epochs_ended = 0

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]

    def on_epoch_end(self):
        self.epochs_ended += 1


def batches(x, y, size):
    for start in range(0, len(x), size):
        yield x[start:start + size], y[start:start + size]


@pytest.mark.parametrize("kind", ["py_dataset", "generator", "dataset"])
def test_other_inputs_match_model_fit(kind):
    x, y = classification(n=36)

    def data():
        if kind == "py_dataset":
            return {"x": Batches(x, y, 8), "epochs": 3}
        if kind == "generator":  # one pass: a generator is read once
            return {"x": batches(x, y, 8), "epochs": 1}
        return {"x": tf.data.Dataset.from_tensor_slices((x, y)).batch(8), "epochs": 3}

    reference = classifier()
    reference.compile(keras.optimizers.SGD(0.2), **CLASSIFIER)
    given = data()
    expected = reference.fit(verbose=0, validation_data=(x, y), **given).history
    trainer = Trainer(classifier(), keras.optimizers.SGD(0.2), **CLASSIFIER,
                      steps_per_execution=2)
    mine = data()
    history = trainer.fit(verbose=0, validation_data=(x, y), **mine).history
    assert_same_run(history, expected, trainer.model, reference)
    if kind == "py_dataset":
        # One on_epoch_end per epoch (model.fit adds one before its first epoch).
        assert mine["x"].epochs_ended == 3


@pytest.mark.parametrize("replicas", [1, 2])
def test_evaluate_and_predict_match_keras(replicas):
    x, y, weights = two_output_data(45)  # partial last batches, split 3 + 2 on two replicas
    reference = compiled_two_output_model()
    strategy = two_replicas() if replicas == 2 else None
    trainer = Trainer.from_compiled(compiled_two_output_model(strategy))
    expected = reference.evaluate(x, y, sample_weight=weights, batch_size=10, verbose=0,
                                  return_dict=True)
    logs = trainer.evaluate(x, y, sample_weight=weights, batch_size=10, verbose=0)
    assert set(logs) == set(expected)
    # Keras's per-output loss means weight each replica's part alike.
    for key in ("loss", "digit_accuracy", "size_mae", "size_mse"):
        assert logs[key] == pytest.approx(expected[key], abs=TOLERANCE), key
    logs = trainer.evaluate(x, y, sample_weight=weights, batch_size=10, steps=2, verbose=0)
    expected = reference.evaluate(x, y, sample_weight=weights, batch_size=10, steps=2,
                                  verbose=0, return_dict=True)
    assert logs == pytest.approx(expected, abs=TOLERANCE)  # two full batches
    predicted = trainer.predict(x, batch_size=7, verbose=0)
    wanted = reference.predict(x, batch_size=7, verbose=0)
    assert set(predicted) == {"digit", "size"}
    for name in wanted:
        assert predicted[name].shape == wanted[name].shape
        np.testing.assert_allclose(predicted[name], wanted[name], atol=1e-6)
    assert trainer.predict(x, batch_size=7, steps=2, verbose=0)["size"].shape == (14, 1)


@pytest.mark.parametrize("call, match", [
    (lambda t, x, y: t.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
                           validation_split=0.2), r"`validation_split` is only supported for"),
    (lambda t, x, y: t.fit(x, y, validation_split=1.5), r"`validation_split` must be a number"),
    (lambda t, x, y: t.fit(x, y, validation_freq=0), r"`validation_freq` must be an integer"),
    (lambda t, x, y: t.fit(x, y, validation_freq=[0, 2]), r"`validation_freq` must be an int"),
    (lambda t, x, y: t.fit(x, y, shuffle="yes"), r"`shuffle` must be one of True, False"),
    (lambda t, x, y: t.fit(x, y, validation_steps=0), r"`validation_steps` must be an int"),
    (lambda t, x, y: t.evaluate(x, y, steps=0), r"`steps` must be an integer >= 1"),
    (lambda t, x, y: t.fit(x, y, validation_data=(x, y, y, y)), r"`validation_data` must be"),
    (lambda t, x, y: t.predict("data.csv"), r"`x` must be a tf.data.Dataset or NumPy arrays"),
], ids=["split-dataset", "split-range", "freq-0", "freq-list", "shuffle", "val-steps",
        "eval-steps", "val-tuple", "predict-x"])
def test_bad_arguments_are_refused_before_training(call, match):
    x, y = classification(n=16)
    trainer = Trainer(classifier(), keras.optimizers.SGD(0.2), **CLASSIFIER)
    before = [w.copy() for w in trainer.model.get_weights()]
    with pytest.raises(ValueError, match=match):
        call(trainer, x, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, trainer.model.get_weights()))


def test_a_model_compiled_again_and_new_output_shapes_are_taken_up():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.Dense(3)])  # (b, t, 3)
    trainer = Trainer(model, keras.optimizers.SGD(0.1), "mse")
    for steps in (5, 7):  # another output shape: predictions of that shape
        x = np.random.default_rng(steps).normal(size=(6, steps, 2)).astype("float32")
        np.testing.assert_allclose(trainer.predict(x, batch_size=4, verbose=0),
                                   model.predict(x, batch_size=4, verbose=0), atol=1e-6)
    # Compiled again by its user: the next call trains with the new loss and
    # optimizer (SGD(0): the weights stay; the loss is the mean absolute error).
    x = np.random.default_rng(0).normal(size=(8, 5, 2)).astype("float32")
    y = np.zeros((8, 5, 3), "float32")
    model.compile(keras.optimizers.SGD(0.0), "mae")
    loss = trainer.fit(x, y, batch_size=8, verbose=0).history["loss"][0]
    assert trainer.optimizer is model.optimizer
    assert loss == pytest.approx(float(np.abs(model.predict(x, verbose=0)).mean()), rel=1e-5)
