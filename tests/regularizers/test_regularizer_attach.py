"""apply / remove / describe on real, built (and trained) Keras models."""

import warnings

import keras
import numpy as np
import pytest

from kerastune_kit import regularizers as R
from kerastune_kit._model_state.optimizer import host_sync, trace_version


def data(n=16, features=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    return x, y


def mlp(kernel=None, bias=None, activity=None, name="mlp"):
    return keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(3, kernel_regularizer=kernel, bias_regularizer=bias,
                           activity_regularizer=activity, name="hidden"),
        keras.layers.Dense(1, kernel_regularizer=kernel, bias_regularizer=bias, name="out"),
    ], name=name)


def randomize(model, seed=1):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])


def penalty(model):
    return float(sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses))


def kernels(model, *names):
    return [model.get_layer(n).kernel.numpy() if not isinstance(n, tuple)
            else n[0].get_layer(n[1]).kernel.numpy() for n in names]


def l2(strength, arrays):
    return strength * sum(float((a.astype("float64") ** 2).sum()) for a in arrays)


def test_apply_on_a_built_model_puts_the_formula_penalty_in_losses_weights_untouched():
    model = mlp()
    randomize(model)
    before = [w.copy() for w in model.get_weights()]
    # The Keras pitfall this module exists for: the attribute alone does nothing.
    model.get_layer("hidden").kernel_regularizer = keras.regularizers.L2(1.0)
    assert model.losses == []

    R.apply(model, kernel="l2(0.01)", bias="l1(0.1)", overwrite=True)

    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    expected = (l2(0.01, [hidden.kernel.numpy(), out.kernel.numpy()])
                + 0.1 * (np.abs(hidden.bias.numpy()).sum() + np.abs(out.bias.numpy()).sum()))
    assert penalty(model) == pytest.approx(expected, rel=1e-6)
    assert len(model.losses) == 4
    for old, new in zip(before, model.get_weights()):
        assert np.array_equal(old, new)  # bit for bit
    # Recorded for saving too.
    assert hidden.get_config()["kernel_regularizer"]["config"] == {"l2": 0.01}


def test_training_after_apply_matches_a_model_built_with_the_regularizer_step_for_step():
    x, y = data(32)
    reference = mlp(kernel=keras.regularizers.L2(1e-3), name="reference")
    attached = mlp(name="attached")
    plain = mlp(name="plain")
    for model in (reference, attached, plain):
        model.compile(keras.optimizers.SGD(0.1), "mse")
    # `attached` is trained (and its train function traced) before apply.
    attached.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert attached.train_function is not None
    reference.set_weights(attached.get_weights())
    plain.set_weights(attached.get_weights())

    R.apply(attached, kernel="l2(1e-3)")

    def run(model):
        steps = []
        def weights_now(batch, logs):
            host_sync(model)  # under JAX the trainer holds the values mid-epoch
            steps.append([w.copy() for w in model.get_weights()])

        record = keras.callbacks.LambdaCallback(on_train_batch_end=weights_now)
        history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                            callbacks=[record])
        return steps, history.history["loss"]

    ref_steps, ref_loss = run(reference)
    att_steps, att_loss = run(attached)
    plain_steps, _ = run(plain)
    assert len(ref_steps) == 12
    for ref, att in zip(ref_steps, att_steps):
        for a, b in zip(ref, att):
            np.testing.assert_array_equal(a, b)
    assert ref_loss == att_loss
    # The penalty mattered: without it the weights go elsewhere.
    assert not np.allclose(plain_steps[-1][0], ref_steps[-1][0], rtol=0, atol=1e-5)


def test_an_evaluated_model_picks_the_penalty_up_in_evaluate():
    x, y = data()
    model = mlp()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    base = model.evaluate(x, y, batch_size=16, verbose=0)
    R.apply(model, kernel=keras.regularizers.L2(0.5))
    expected = base + l2(0.5, kernels(model, "hidden", "out"))
    assert model.evaluate(x, y, batch_size=16, verbose=0) == pytest.approx(expected, rel=1e-5)


def test_activity_penalty_is_keras_formula_divided_by_batch_size():
    x, _ = data(8)
    model = mlp()
    randomize(model)
    R.apply(model, activity="l2(0.2)", layers="^hidden$")
    model(x)
    hidden = model.get_layer("hidden")
    out = x @ hidden.kernel.numpy() + hidden.bias.numpy()
    # Keras divides activity penalties by the batch size from 3.14 on.
    divisor = 8 if tuple(map(int, keras.__version__.split(".")[:2])) >= (3, 14) else 1
    assert penalty(model) == pytest.approx(
        0.2 * (out.astype("float64") ** 2).sum() / divisor, rel=1e-5)
    assert model.get_layer("out").activity_regularizer is None


def nested_functional():
    block = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(4, name="block_dense"),
        keras.layers.Dense(3, name="block_out"),
    ], name="block")
    inner_in = keras.Input((3,))
    inner = keras.Model(inner_in, keras.layers.Dense(2, name="inner_dense")(inner_in), name="inner")
    inputs = keras.Input((6, 2))
    h = keras.layers.Conv1D(2, 3, name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    h = inner(block(h))
    outputs = keras.layers.Dense(1, name="head")(h)
    return keras.Model(inputs, outputs, name="outer"), block, inner


@pytest.mark.parametrize("layers, selected", [
    (None, ["conv", "block/block_dense", "block/block_out", "inner/inner_dense", "head"]),
    (keras.layers.Conv1D, ["conv"]),
    ((keras.layers.Conv1D, keras.Sequential), ["conv", "block/block_dense", "block/block_out"]),
    ("^head$", ["head"]),
    ("dense", ["block/block_dense", "inner/inner_dense"]),      # re.search
    ("^inner$", ["inner/inner_dense"]),                         # a whole nested model
    (lambda layer: layer.name.endswith("_out"), ["block/block_out"]),
])
def test_selection_on_nested_functional_models(layers, selected):
    model, block, inner = nested_functional()
    R.apply(model, kernel="l2(0.25)", layers=layers)
    rows = R.describe(model).regularized()
    assert [row.layer for row in rows] == selected
    assert {row.weight for row in rows} == {"kernel"}
    by_path = {"conv": model.get_layer("conv"), "head": model.get_layer("head"),
               "block/block_dense": block.get_layer("block_dense"),
               "block/block_out": block.get_layer("block_out"),
               "inner/inner_dense": inner.get_layer("inner_dense")}
    expected = l2(0.25, [by_path[p].kernel.numpy() for p in selected])
    assert penalty(model) == pytest.approx(expected, rel=1e-6)


def test_nested_penalties_reach_model_fit_and_the_saved_file(tmp_path):
    model, block, inner = nested_functional()
    x = np.random.default_rng(0).normal(size=(8, 6, 2)).astype("float32")
    y = np.zeros((8, 1), "float32")
    model.compile(keras.optimizers.SGD(0.0), "mse")  # lr 0: weights stay, loss is comparable
    base = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history["loss"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # functional/Sequential nesting saves: no warning
        R.apply(model, kernel="l2(0.5)", bias="l1(0.5)")
    loss = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history["loss"][0]
    assert loss == pytest.approx(base + penalty(model), rel=1e-5)

    model.save(tmp_path / "nested.keras")
    loaded = keras.saving.load_model(tmp_path / "nested.keras")
    assert penalty(loaded) == pytest.approx(penalty(model), rel=1e-6)
    assert str(R.describe(loaded)) == str(R.describe(model))


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = keras.Sequential([keras.layers.Dense(3, name="body_dense")], name="body")
        self.head = keras.layers.Dense(1, name="sub_head")

    def call(self, x):
        return self.head(self.body(x))


def test_subclassed_models_work_in_memory_and_warn_that_saving_drops_them(tmp_path):
    model = Subclassed()
    x, y = data(8)
    model(x)
    with pytest.warns(UserWarning, match=r"body/body_dense\.kernel.*sub_head\.kernel"):
        R.apply(model, kernel="l2(0.5)")
    assert [row.layer for row in R.describe(model).regularized()] == ["body/body_dense", "sub_head"]
    expected = l2(0.5, [model.body.get_layer("body_dense").kernel.numpy(),
                        model.head.kernel.numpy()])
    assert penalty(model) == pytest.approx(expected, rel=1e-6)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    mse = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    assert model.evaluate(x, y, batch_size=8, verbose=0) == pytest.approx(mse + expected, rel=1e-5)

    # What the warning claims: the .keras file rebuilds the layers from code.
    model.save(tmp_path / "sub.keras")
    loaded = keras.saving.load_model(tmp_path / "sub.keras",
                                     custom_objects={"Subclassed": Subclassed})
    assert loaded.losses == []


def test_overwrite_is_refused_naming_layer_weight_and_existing_regularizer():
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L1(0.03), name="hidden"),
        keras.layers.Dense(1, name="out"),
    ])
    with pytest.raises(ValueError) as info:
        R.apply(model, kernel="l2(0.1)")
    message = str(info.value)
    assert "'hidden'" in message and "'kernel'" in message and "L1(l1=0.03)" in message
    assert "overwrite=True" in message
    # Nothing was changed, not even on the free layer.
    assert model.get_layer("out").kernel.regularizer is None
    assert isinstance(model.get_layer("hidden").kernel.regularizer, keras.regularizers.L1)

    shared = R.l2(0.1)
    R.apply(model, kernel=shared, overwrite=True)
    R.apply(model, kernel=shared)  # the same object again is not a conflict
    assert all(row.regularizer is shared for row in R.describe(model).regularized())


def test_remove_restores_the_unregularized_loss(tmp_path):
    x, y = data()
    model = mlp(kernel=keras.regularizers.L2(0.5), bias=keras.regularizers.L1(0.5),
                activity=keras.regularizers.L2(0.5))
    randomize(model)
    plain = mlp(name="plain")
    plain.set_weights(model.get_weights())
    for m in (model, plain):
        m.compile(keras.optimizers.SGD(0.1), "mse")
    regularized = model.evaluate(x, y, batch_size=16, verbose=0)
    target = plain.evaluate(x, y, batch_size=16, verbose=0)
    assert regularized > target + 1.0

    R.remove(model, kernel=False, activity=False)  # biases only
    left = [(row.layer, row.weight) for row in R.describe(model).regularized()]
    assert left == [("hidden", "kernel"), ("hidden", "activity"), ("out", "kernel")]
    R.remove(model)
    assert R.describe(model).regularized() == []
    assert model.evaluate(x, y, batch_size=16, verbose=0) == pytest.approx(target, rel=1e-6)
    model(x)
    assert model.losses == []
    model.save(tmp_path / "removed.keras")
    assert keras.saving.load_model(tmp_path / "removed.keras").get_layer("hidden").get_config()[
        "kernel_regularizer"] is None


def test_rnn_conv_and_embedding_weights_save_and_load(tmp_path):
    inputs = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(10, 3, name="embed")(inputs)
    h = keras.layers.SeparableConv1D(4, 2, name="sep")(h)
    h = keras.layers.DepthwiseConv1D(2, name="depth")(h)
    h = keras.layers.Bidirectional(keras.layers.LSTM(2, return_sequences=True), name="bi")(h)
    h = keras.layers.TimeDistributed(keras.layers.Dense(2, name="td_dense"), name="td")(h)
    outputs = keras.layers.Dense(1, name="head")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    schedule = R.ScheduledRegularizer(0.25, base="l1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        R.apply(model, kernel="l2(0.01)", bias="l1(0.02)", recurrent=schedule,
                activity="l2(0.03)", layers=lambda layer: layer.name != "head")
    table = R.describe(model)
    weights = {(row.layer, row.weight) for row in table.regularized()}
    assert {("embed", "embeddings"), ("sep", "depthwise_kernel"), ("sep", "pointwise_kernel"),
            ("depth", "kernel"), ("bi/forward_lstm/lstm_cell", "kernel"),
            ("bi/backward_lstm/lstm_cell", "recurrent_kernel"), ("td/td_dense", "kernel"),
            ("bi/forward_lstm", "activity"), ("embed", "activity")} <= weights
    assert not any(layer == "head" for layer, _ in weights)
    assert ("bi/forward_lstm/lstm_cell", "activity") not in weights  # the RNN, not its cell

    x = np.arange(20).reshape(4, 5) % 10
    model(x)
    model.save(tmp_path / "mixed.keras")
    loaded = keras.saving.load_model(tmp_path / "mixed.keras")
    loaded(x)
    assert str(R.describe(loaded)) == str(table)
    assert penalty(loaded) == pytest.approx(penalty(model), rel=1e-5)


def test_bad_arguments_say_what_is_wrong():
    model = mlp()
    with pytest.raises(ValueError, match="not built"):
        R.apply(keras.Sequential([keras.layers.Dense(2)]), kernel="l2")
    with pytest.raises(ValueError, match="Nothing to apply"):
        R.apply(model)
    with pytest.raises(ValueError, match=r"`bias`: Unknown regularizer 'l3'.*Known"):
        R.apply(model, bias="l3")
    with pytest.raises(ValueError, match="must be None, a layer class"):
        R.apply(model, kernel="l2", layers=42)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        R.apply(model, kernel="l2", layers="(")
    with pytest.raises(ValueError, match=r"matches no layer.*hidden \(kernel, bias\)"):
        R.apply(model, kernel="l2", layers="^nope$")
    with pytest.raises(ValueError, match=r"matches no layer"):
        R.remove(model, layers=keras.layers.Conv2D)
    no_bias = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    with pytest.raises(ValueError, match="No selected layer has a bias to regularize"):
        R.apply(no_bias, bias="l2")
    with pytest.raises(ValueError, match="must be a keras.Model"):
        R.describe("model")


def test_describe_prints_an_aligned_table():
    model = mlp(kernel=keras.regularizers.L2(0.001))
    lines = str(R.describe(model)).splitlines()
    assert lines[0].split() == ["layer", "weight", "regularizer"]
    assert lines[1].split() == ["hidden", "kernel", "L2(l2=0.001)"]
    assert lines[2].split() == ["hidden", "bias", "-"]
    assert len({line.index(line.split()[1]) for line in lines}) == 1  # aligned column


@pytest.mark.tensorflow
def test_the_kits_trainer_trains_with_the_penalty():
    from kerastune_kit.training import Trainer

    x = np.ones((4, 2), "float32")
    y = np.zeros((4, 1), "float32")

    def build():
        model = keras.Sequential([keras.Input((2,)),
                                  keras.layers.Dense(1, kernel_initializer="ones")])
        return R.apply(model, kernel="l2(0.5)")

    # lr 0: the loss is mse (1 + 1)**2 = 4 plus 0.5 * sum(w**2) = 1.
    trainer = Trainer(build, lambda: keras.optimizers.SGD(0.0), "mse")
    assert trainer.fit(x, y, batch_size=4, epochs=1, verbose=0).history["loss"] == [
        pytest.approx(5.0, rel=1e-6)]
    assert trace_version(trainer.model) == 1  # apply() signalled the new penalty


@pytest.mark.tensorflow
def test_the_kits_trainer_picks_up_a_penalty_applied_after_its_first_fit():
    from kerastune_kit.training import Trainer

    x = np.ones((4, 2), "float32")
    y = np.zeros((4, 1), "float32")
    trainer = Trainer(lambda: keras.Sequential([
        keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")]),
        lambda: keras.optimizers.SGD(0.0), "mse")
    assert trainer.fit(x, y, batch_size=4, epochs=1, verbose=0).history["loss"] == [
        pytest.approx(4.0, rel=1e-6)]
    R.apply(trainer.model, kernel="l2(0.5)")
    assert trainer.fit(x, y, batch_size=4, epochs=1, verbose=0).history["loss"] == [
        pytest.approx(5.0, rel=1e-6)]
