"""Each schedule against its closed form, config round trips and bad input."""

import math

import keras
import numpy as np
import pytest

from kerastune_kit import schedules as S

STEPS = [0, 1, 5, 9, 10, 11, 25, 50, 74, 75, 99, 100, 150]


def values(schedule, steps=STEPS):
    return np.array([float(schedule(t)) for t in steps])


def cosine(a, b, f):
    f = min(max(f, 0.0), 1.0)
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * f))


def test_constant():
    np.testing.assert_allclose(values(S.Constant(0.3)), 0.3, rtol=1e-6)


def test_linear_decay():
    s = S.LinearDecay(2.0, decay_steps=100, end_learning_rate=0.5)
    expect = [2.0 + (0.5 - 2.0) * min(t / 100, 1.0) for t in STEPS]
    np.testing.assert_allclose(values(s), expect, rtol=1e-6)
    assert s.total_steps == 100


def test_step_decay():
    s = S.StepDecay(1.0, step_size=10, factor=0.5)
    expect = [0.5 ** (t // 10) for t in STEPS]
    np.testing.assert_allclose(values(s), expect, rtol=1e-6)


@pytest.mark.parametrize("shape", ["linear", "cosine", "exponential"])
def test_warmup_around_keras_schedule(shape):
    inner = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=20, decay_rate=0.5)
    s = S.Warmup(inner, warmup_steps=10, initial_learning_rate=0.001, shape=shape)

    def closed(t):
        if t >= 10:
            return 0.1 * 0.5 ** ((t - 10) / 20)
        f = t / 10
        if shape == "linear":
            return 0.001 + (0.1 - 0.001) * f
        if shape == "cosine":
            return cosine(0.001, 0.1, f)
        return 0.001 * (0.1 / 0.001) ** f

    np.testing.assert_allclose(values(s), [closed(t) for t in STEPS], rtol=1e-5)
    assert s.total_steps == 30  # warmup + the Keras schedule's decay_steps


def test_one_cycle():
    s = S.OneCycle(1.0, total_steps=100, pct_start=0.25, div_factor=10, final_div_factor=100)
    start, end = 0.1, 0.001

    def closed(t):
        if t < 25:
            return cosine(start, 1.0, t / 25)
        return cosine(1.0, end, (t - 25) / 75)

    np.testing.assert_allclose(values(s), [closed(t) for t in STEPS], rtol=1e-5)
    lin = S.OneCycle(1.0, total_steps=100, pct_start=0.5, anneal="linear")
    assert float(lin(25)) == pytest.approx(0.04 + (1 - 0.04) * 0.5, rel=1e-5)


@pytest.mark.parametrize("decay_shape", ["linear", "cosine", "1-sqrt"])
def test_warmup_stable_decay(decay_shape):
    s = S.WarmupStableDecay(2.0, total_steps=100, warmup_steps=10, decay_steps=25,
                            final_learning_rate=0.2, decay_shape=decay_shape)

    def closed(t):
        if t < 10:
            return 2.0 * t / 10
        if t < 75:
            return 2.0
        f = min((t - 75) / 25, 1.0)
        if decay_shape == "linear":
            return 2.0 + (0.2 - 2.0) * f
        if decay_shape == "cosine":
            return cosine(2.0, 0.2, f)
        return 0.2 + (2.0 - 0.2) * (1 - math.sqrt(f))

    np.testing.assert_allclose(values(s), [closed(t) for t in STEPS], rtol=1e-5)


def test_sequence_pieces_see_their_own_steps():
    s = S.Sequence([S.Constant(0.5), S.LinearDecay(1.0, 50), S.Constant(0.01)],
                   boundaries=[10, 60])

    def closed(t):
        if t < 10:
            return 0.5
        if t < 60:
            return 1.0 - (t - 10) / 50
        return 0.01

    np.testing.assert_allclose(values(s), [closed(t) for t in STEPS], rtol=1e-5, atol=1e-7)
    assert s.total_steps is None  # the last piece is open-ended


def test_get_forms():
    assert isinstance(S.get(0.1), S.Constant)
    s = S.get("linear_decay(1.0, decay_steps=10)")
    assert float(s(5)) == pytest.approx(0.5)
    k = S.get("CosineDecay(initial_learning_rate=0.1, decay_steps=100)")
    assert isinstance(k, keras.optimizers.schedules.CosineDecay)
    one = S.OneCycle(1.0, 100)
    assert S.get(one) is one
    again = S.get(keras.saving.serialize_keras_object(S.Warmup(one, 5)))
    assert isinstance(again, S.Warmup) and float(again(50)) == pytest.approx(float(one(45)))
    assert isinstance(S.get({"class_name": "StepDecay",
                             "config": {"initial_learning_rate": 1.0, "step_size": 3}}),
                      S.StepDecay)


ALL = [
    S.Constant(0.1, total_steps=10),
    S.LinearDecay(1.0, 100, 0.1),
    S.StepDecay(1.0, 10, 0.5),
    S.Warmup(S.CosineDecay(0.1, 100), 10, shape="cosine"),
    S.OneCycle(1.0, 100),
    S.WarmupStableDecay(1.0, 100, 10, 20, decay_shape="1-sqrt"),
    S.Sequence([S.Constant(0.5), S.OneCycle(1.0, 50)], [10]),
]


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_config_round_trip(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is type(schedule)
    np.testing.assert_allclose(values(again), values(schedule), rtol=1e-6)
    assert again.get_config() == schedule.get_config()


def test_saved_model_keeps_schedule(tmp_path):
    schedule = S.Warmup(S.OneCycle(0.5, total_steps=200), warmup_steps=7)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    model.fit(np.ones((8, 3)), np.ones((8, 2)), epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    lr = loaded.optimizer._learning_rate
    assert isinstance(lr, S.Warmup)
    np.testing.assert_allclose(values(lr), values(schedule), rtol=1e-6)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(float(schedule(1)))


@pytest.mark.parametrize("build, arg", [
    (lambda: S.Constant(-0.1), "learning_rate"),
    (lambda: S.LinearDecay(1.0, 0), "decay_steps"),
    (lambda: S.LinearDecay(-1.0, 10), "initial_learning_rate"),
    (lambda: S.StepDecay(1.0, step_size=-3), "step_size"),
    (lambda: S.StepDecay(1.0, 3, factor=1.5), "factor"),
    (lambda: S.Warmup(S.Constant(1.0), 0), "warmup_steps"),
    (lambda: S.Warmup(S.Constant(1.0), 5, shape="zigzag"), "shape"),
    (lambda: S.Warmup(S.Constant(1.0), 5, shape="exponential"), "initial_learning_rate"),
    (lambda: S.OneCycle(1.0, 100, pct_start=1.2), "pct_start"),
    (lambda: S.OneCycle(float("nan"), 100), "max_learning_rate"),
    (lambda: S.WarmupStableDecay(1.0, 100, warmup_steps=90, decay_steps=20), "warmup_steps"),
    (lambda: S.WarmupStableDecay(1.0, 100, decay_shape="cubic"), "decay_shape"),
    (lambda: S.Sequence([S.Constant(1.0), S.Constant(2.0)], [10, 5]), "boundaries"),
    (lambda: S.Sequence([S.Constant(1.0)] * 3, [10, 5]), "boundaries"),
    (lambda: S.Sequence([S.Constant(1.0), S.Constant(2.0)], [5, 10]), "boundaries"),
    (lambda: S.get("no_such_schedule(1)"), "Known schedules"),
    (lambda: S.get("__import__('os')"), "Unknown schedule"),
    (lambda: S.get("os.system('ls')"), "Cannot parse"),
    (lambda: S.get("constant(x)"), "literals"),
    (lambda: S.get("constant(1.0) + 1"), "Cannot parse"),
])
def test_bad_arguments(build, arg):
    with pytest.raises(ValueError, match=arg):
        build()


def test_bad_value_is_named_in_message():
    with pytest.raises(ValueError, match=r"`decay_steps`.*-5"):
        S.LinearDecay(1.0, -5)
