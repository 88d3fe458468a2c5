"""The named schedules against closed forms of their phases (NumPy, float64),
and one list of shapes for all."""

import math

import numpy as np
import pytest

from kerastune_kit import schedules as S
from kerastune_kit.schedules import _shapes

# Integer steps and the fractional positions the epoch and second units give.
POSITIONS = [0, 0.5, 1, 2.5, 5, 9.99, 10, 10.5, 20, 24.9, 25, 30, 49.5, 50, 74, 75, 75.25,
             80, 99, 99.9, 100, 100.5, 101, 130]

SHAPES = {  # the interpolations, written out
    "linear": lambda a, b, f: a + (b - a) * f,
    "cosine": lambda a, b, f: b + (a - b) * 0.5 * (1 + math.cos(math.pi * f)),
    "exponential": lambda a, b, f: a * (b / a) ** f,
    "1-sqrt": lambda a, b, f: b + (a - b) * (1 - math.sqrt(f)),
}


def anneal(start, end, steps, shape="linear"):
    """From ``start`` at 0 to ``end`` at ``steps`` along ``shape``, then ``end``."""
    return lambda t: SHAPES[shape](start, end, min(max(t / steps, 0.0), 1.0))


def constant(value):
    return lambda t: value


def phases(pieces, boundaries):
    """``pieces[i]`` from ``boundaries[i-1]`` on, at the steps since then."""
    def at(t):
        value = pieces[0](t)
        for boundary, piece in zip(boundaries, pieces[1:]):
            if t >= boundary:
                value = piece(t - boundary)
        return value
    return at


def same(named, closed_form):
    """The schedule's float32 values equal the closed form's to float32
    precision at the schedule's scale (its largest value)."""
    expected = np.array([closed_form(p) for p in POSITIONS])
    np.testing.assert_allclose([float(named(np.float32(p))) for p in POSITIONS], expected,
                               rtol=1e-6, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("end", [0.0, 0.25])
def test_linear_decay_is_a_linear_anneal(end):
    same(S.LinearDecay(2.0, 40, end), anneal(2.0, end, 40, "linear"))


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_one_cycle_is_two_anneals(shape):
    s = S.OneCycle(1.0, total_steps=100, pct_start=0.25, div_factor=10, final_div_factor=100,
                   anneal=shape)
    same(s, phases([anneal(0.1, 1.0, 25, shape), anneal(1.0, 0.001, 75, shape)], [25]))


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_warmup_stable_decay_is_anneal_constant_anneal(shape):
    s = S.WarmupStableDecay(2.0, total_steps=100, warmup_steps=10, decay_steps=25,
                            initial_learning_rate=0.1, final_learning_rate=0.2,
                            decay_shape=shape)
    same(s, phases([anneal(0.1, 2.0, 10), constant(2.0), anneal(2.0, 0.2, 25, shape)],
                   [10, 75]))


@pytest.mark.parametrize("kwargs, pieces, boundaries", [
    # No warmup: the stable phase starts at 0.
    (dict(warmup_steps=0, decay_steps=20), [constant(1.0), anneal(1.0, 0.0, 20)], [80]),
    # No stable phase.
    (dict(warmup_steps=40, decay_steps=60), [anneal(0.0, 1.0, 40), anneal(1.0, 0.0, 60)],
     [40]),
    # Decay only.
    (dict(warmup_steps=0, decay_steps=100), [anneal(1.0, 0.0, 100)], []),
    # No decay: one step of it after the end, as always.
    (dict(warmup_steps=10, decay_steps=0),
     [anneal(0.0, 1.0, 10), constant(1.0), anneal(1.0, 0.0, 1)], [10, 100]),
])
def test_warmup_stable_decay_drops_empty_phases(kwargs, pieces, boundaries):
    same(S.WarmupStableDecay(1.0, total_steps=100, **kwargs), phases(pieces, boundaries))


@pytest.mark.parametrize("shape", ["linear", "cosine", "exponential"])
def test_warmup_is_an_anneal_to_the_schedules_first_value(shape):
    inner = S.OneCycle(1.0, 50)
    first = 1.0 / 25  # OneCycle starts at max_learning_rate / div_factor (25)
    cycle = phases([anneal(first, 1.0, 15, "cosine"), anneal(1.0, first / 1e4, 35, "cosine")],
                   [15])
    same(S.Warmup(inner, 10, initial_learning_rate=0.01, shape=shape),
         phases([anneal(0.01, first, 10, shape), cycle], [10]))


def test_one_cycle_turns_between_steps():
    # pct_start * total_steps = 2.1: the peak falls between steps 2 and 3.
    s = S.OneCycle(0.5, total_steps=7, pct_start=0.3, anneal="linear")
    start, end = 0.5 / 25, 0.5 / 25 / 1e4
    for t in (0, 1, 2):
        assert float(s(t)) == pytest.approx(start + (0.5 - start) * t / 2.1, rel=1e-5)
    for t in (3, 5, 7, 9):
        f = min((t - 2.1) / 4.9, 1.0)
        assert float(s(t)) == pytest.approx(0.5 + (end - 0.5) * f, rel=1e-5, abs=1e-7)


# One list of shapes --------------------------------------------------------------------

ACCEPTED = {  # what each argument accepts (as before the redesign) and its message's order
    (S.Anneal, "shape"): ("linear", "cosine", "exponential", "1-sqrt"),
    (S.Warmup, "shape"): ("linear", "cosine", "exponential"),
    (S.WarmupStableDecay, "decay_shape"): ("linear", "cosine", "1-sqrt"),
    (S.OneCycle, "anneal"): ("cosine", "linear"),
}
VALID = {S.Anneal: dict(start=1.0, end=0.1, steps=10),
         S.Warmup: dict(schedule=0.1, warmup_steps=5, initial_learning_rate=0.01),
         S.WarmupStableDecay: dict(peak_learning_rate=1.0, total_steps=10),
         S.OneCycle: dict(max_learning_rate=1.0, total_steps=10)}


@pytest.mark.parametrize("cls, argument", list(ACCEPTED), ids=lambda v: getattr(v, "__name__", v))
def test_every_shape_argument_checks_against_the_one_list(cls, argument):
    accepted = ACCEPTED[cls, argument]
    assert set(accepted) <= set(_shapes.SHAPES)
    for shape in _shapes.SHAPES:
        kwargs = {**VALID[cls], argument: shape}
        if shape in accepted:
            assert getattr(cls(**kwargs), argument) == shape
        else:
            with pytest.raises(ValueError, match=f"`{argument}` must be one of"):
                cls(**kwargs)
    listed = ", ".join(repr(s) for s in accepted)
    with pytest.raises(ValueError) as info:
        cls(**{**VALID[cls], argument: "zigzag"})
    assert str(info.value) == f"`{argument}` must be one of {listed}; got 'zigzag'."


def test_the_pieces_are_composed_from_the_attributes_at_each_call():
    # As before the redesign, a schedule computes from its attributes when called.
    s = S.LinearDecay(1.0, 100)
    s.end_learning_rate = 0.5
    assert float(s(100)) == pytest.approx(0.5)
    chain = S.Sequence([S.Constant(1.0), S.Constant(0.1)], [10])
    chain.boundaries = [20]
    assert float(chain(15)) == pytest.approx(1.0)
