"""ScheduledRegularizer: a strength variable changed mid-training, no retrace."""

import keras
import numpy as np
import pytest

from kerastune_kit import regularizers as R

W = np.array([[0.5, -1.5], [2.0, -0.25]], dtype="float32")


def value(regularizer, w=W):
    return float(keras.ops.convert_to_numpy(regularizer(keras.ops.convert_to_tensor(w))))


def test_penalty_is_strength_times_kerass_base():
    reg = R.ScheduledRegularizer(0.3)  # base "l2" at unit strength
    assert isinstance(reg, keras.regularizers.Regularizer)
    assert value(reg) == pytest.approx(value(keras.regularizers.L2(0.3)), rel=1e-6)
    assert value(reg) == pytest.approx(0.3 * (W ** 2).sum(), rel=1e-6)
    l1 = R.ScheduledRegularizer(0.3, "l1")
    assert value(l1) == pytest.approx(0.3 * np.abs(W).sum(), rel=1e-6)
    scaled = R.ScheduledRegularizer(2.0, "l1l2(l1=0.1, l2=0.5)")
    assert value(scaled) == pytest.approx(2.0 * value(keras.regularizers.L1L2(0.1, 0.5)), rel=1e-6)
    reg.set_strength(0.0)
    assert value(reg) == 0.0
    reg.strength.assign(1.5)
    assert value(reg) == pytest.approx(1.5 * (W ** 2).sum(), rel=1e-6)


@pytest.mark.parametrize("call, fragment", [
    (lambda: R.ScheduledRegularizer(-1.0), "`strength` must be in [0, inf], got -1.0"),
    (lambda: R.ScheduledRegularizer(float("nan")), "`strength` must be a finite number"),
    (lambda: R.ScheduledRegularizer(0.1, base="l3"), "Unknown regularizer 'l3'"),
    (lambda: R.ScheduledRegularizer(0.1, base=None), "`base` must be a fixed penalty"),
    (lambda: R.ScheduledRegularizer(0.1, base=R.ScheduledRegularizer()), "not another"),
    (lambda: R.ScheduledRegularizer().set_strength(-2), "`strength` must be in [0, inf]"),
])
def test_bad_arguments(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


class CountTraces(keras.layers.Layer):
    """Identity whose Python ``call`` runs only when a function is traced."""

    traces = 0

    def call(self, x):
        CountTraces.traces += 1
        return x


def test_a_callback_changes_the_loss_next_step_without_retracing():
    x = np.ones((4, 2), "float32")
    y = np.zeros((4, 1), "float32")
    reg = R.ScheduledRegularizer(0.0)
    model = keras.Sequential([keras.Input((2,)), CountTraces(),
                              keras.layers.Dense(1, kernel_initializer="ones")])
    R.apply(model, kernel=reg)
    # lr 0: weights stay put, so each one-batch epoch's loss is mse + strength * sum(w**2).
    model.compile(keras.optimizers.SGD(0.0), "mse")
    strengths = [0.0, 0.5, 2.0, 0.25]
    ramp = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: reg.set_strength(strengths[epoch]))
    traces = []
    count = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: traces.append(CountTraces.traces))
    losses = model.fit(x, y, batch_size=4, epochs=4, verbose=0,
                       callbacks=[ramp, count]).history["loss"]

    kernel_l2 = float((model.layers[-1].kernel.numpy() ** 2).sum())  # 2.0
    mse = 4.0  # output = 1 + 1 (+ bias 0), target 0
    for loss, strength in zip(losses, strengths):
        assert loss == pytest.approx(mse + strength * kernel_l2, rel=1e-6)
    if keras.backend.backend() == "jax":
        # JAX compiles the strength in: each change (0.5, 2, 0.25) retraces once.
        assert traces[0] >= 1 and np.diff(traces).tolist() == [1, 1, 1]
        return
    if keras.backend.backend() == "torch":
        return  # eager: nothing is traced, the call runs at every step
    assert traces[0] >= 1 and len(set(traces)) == 1  # traced in the first epoch only
    function = model.train_function
    reg.set_strength(1.0)
    again = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history["loss"][0]
    assert again == pytest.approx(mse + 1.0 * kernel_l2, rel=1e-6)
    assert model.train_function is function and CountTraces.traces == traces[-1]


def test_serializable_with_the_current_strength(tmp_path):
    reg = R.ScheduledRegularizer(0.1, base="l1")
    reg.set_strength(0.7)
    config = reg.get_config()
    assert config["strength"] == pytest.approx(0.7)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(reg))
    assert isinstance(again, R.ScheduledRegularizer) and again is not reg
    assert value(again) == pytest.approx(value(reg), rel=1e-6)
    assert again.strength is not reg.strength  # its own variable
    from_spec = R.get("scheduled(0.7, base='l1')")
    assert value(from_spec) == pytest.approx(value(reg), rel=1e-6)

    shared = R.ScheduledRegularizer(0.2)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    R.apply(model, kernel=shared)
    shared.set_strength(0.9)  # one variable drives every layer that shares it
    kernels = [layer.kernel.numpy() for layer in model.layers]
    expected = 0.9 * sum(float((k ** 2).sum()) for k in kernels)
    total = float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))
    assert total == pytest.approx(expected, rel=1e-6)

    model.save(tmp_path / "scheduled.keras")
    loaded = keras.saving.load_model(tmp_path / "scheduled.keras")
    loaded_total = float(sum(keras.ops.convert_to_numpy(loss) for loss in loaded.losses))
    assert loaded_total == pytest.approx(expected, rel=1e-6)
    # Still schedulable after loading.
    loaded_reg = loaded.layers[0].kernel.regularizer
    assert isinstance(loaded_reg, R.ScheduledRegularizer)
    loaded_reg.set_strength(0.0)
    assert float(keras.ops.convert_to_numpy(loaded.losses[0])) == 0.0
