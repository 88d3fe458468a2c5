"""Anneal, the interpolation piece: each shape against its closed form, its ends, its checks."""

import math

import keras
import numpy as np
import pytest

from kerastune_kit import schedules as S
from kerastune_kit.schedules import _shapes

STEPS = [0, 1, 5, 9, 10, 11, 25, 50, 74, 75, 99, 100, 150]


def values(schedule, steps=STEPS):
    return np.array([float(schedule(t)) for t in steps])


CLOSED = {
    "linear": lambda a, b, f: a + (b - a) * f,
    "cosine": lambda a, b, f: b + (a - b) * 0.5 * (1 + math.cos(math.pi * f)),
    "exponential": lambda a, b, f: a * (b / a) ** f,
    "1-sqrt": lambda a, b, f: b + (a - b) * (1 - math.sqrt(f)),
}


def test_one_closed_form_per_shape():
    assert set(CLOSED) == set(_shapes.SHAPES)


@pytest.mark.parametrize("shape", _shapes.SHAPES)
@pytest.mark.parametrize("start, end", [(2.0, 0.02), (0.01, 1.0)], ids=["down", "up"])
def test_each_shape_against_its_closed_form(shape, start, end):
    s = S.Anneal(start, end, steps=100, shape=shape)
    expect = [CLOSED[shape](start, end, min(t / 100, 1.0)) for t in STEPS]
    np.testing.assert_allclose(values(s), expect, rtol=1e-5)
    assert s.total_steps == 100


@pytest.mark.parametrize("shape", _shapes.SHAPES)
def test_ends_and_fractional_positions(shape):
    s = S.Anneal(1.0, 0.25, steps=4, shape=shape)
    assert float(s(0)) == pytest.approx(1.0, rel=1e-6)
    for after in (4, 4.5, 5, 1000):  # holds the end rate after its steps
        assert float(s(after)) == pytest.approx(0.25, rel=1e-6)
    # Positions between steps (the epoch and second units give them) interpolate.
    assert float(s(1.5)) == pytest.approx(CLOSED[shape](1.0, 0.25, 1.5 / 4), rel=1e-5)
    # Negative positions clip to the start.
    assert float(s(-3)) == pytest.approx(1.0, rel=1e-6)


def test_one_step_and_equal_ends():
    np.testing.assert_allclose(values(S.Anneal(0.5, 0.1, steps=1)),
                               [0.5] + [0.1] * (len(STEPS) - 1), rtol=1e-6)
    np.testing.assert_allclose(values(S.Anneal(0.3, 0.3, 10, "cosine")), 0.3, rtol=1e-6)


def test_many_steps_at_once():
    s = S.Anneal(1.0, 0.0, 10)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(s(np.arange(12))),
                               [1 - min(t, 10) / 10 for t in range(12)], atol=1e-7)


def test_config_spec_and_saved_form():
    s = S.Anneal(1.0, 0.5, 20, "1-sqrt")
    assert s.get_config() == {"start": 1.0, "end": 0.5, "steps": 20, "shape": "1-sqrt"}
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert isinstance(again, S.Anneal) and again.get_config() == s.get_config()
    for spec in ("anneal(1.0, 0.5, 20, '1-sqrt')", "Anneal(start=1, end=0.5, steps=20, "
                 "shape='1-sqrt')"):
        from_spec = S.get(spec)
        assert isinstance(from_spec, S.Anneal)
        np.testing.assert_allclose(values(from_spec), values(s), rtol=1e-6)
    assert isinstance(S.get({"class_name": "Anneal", "config": s.get_config()}), S.Anneal)
    assert S.schedule_length(s) == 20


def test_chained_and_wrapped():
    s = S.Warmup(S.Anneal(1.0, 0.0, 90, "cosine"), warmup_steps=10)
    assert float(s(5)) == pytest.approx(0.5, rel=1e-6)
    assert float(s(55)) == pytest.approx(0.5, rel=1e-5)
    assert s.total_steps == 100
    chain = S.Sequence([S.Anneal(0.1, 1.0, 10), S.Anneal(1.0, 0.1, 10)], [10])
    assert chain.total_steps == 20
    assert float(chain(15)) == pytest.approx(0.55, rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(start=-0.1, end=0.0, steps=10), r"`start` must be in \[0, inf\], got -0.1"),
    (dict(start=1.0, end=float("nan"), steps=10), "`end` must be a finite number"),
    (dict(start=1.0, end=0.0, steps=0), "`steps` must be an integer >= 1, got 0"),
    (dict(start=1.0, end=0.0, steps=2.5), "`steps` must be an integer >= 1"),
    (dict(start=1.0, end=0.0, steps=10, shape="zigzag"),
     "`shape` must be one of 'linear', 'cosine', 'exponential', '1-sqrt'; got 'zigzag'"),
    (dict(start=1.0, end=0.0, steps=10, shape="exponential"),
     r"`end` must be > 0 with shape='exponential'"),
    (dict(start=0.0, end=1.0, steps=10, shape="exponential"),
     r"`start` must be > 0 with shape='exponential'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        S.Anneal(**kwargs)
