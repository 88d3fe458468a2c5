"""_validation: each check's accepted values, its return value and its message."""

import math

import keras
import numpy as np
import pytest

from kerastune_kit._args import validation as V


def test_show_cuts_long_reprs():
    assert V.show("abc") == "'abc'"
    assert V.show(list(range(100)), limit=20) == "[0, 1, 2, 3, 4, 5, 6... (390 characters)"
    assert V.show(10 ** 5000) == "an int of 16610 bits"  # beyond str()'s digit limit


@pytest.mark.parametrize("value, expected", [
    (3, 3.0), (-2.5, -2.5), (np.float32(0.5), 0.5), (np.int64(7), 7.0), (1e30, 1e30),
    (-1e30, -1e30),
])
def test_check_number_accepts_finite_reals(value, expected):
    result = V.check_number("x", value)
    assert result == expected and type(result) is float


@pytest.mark.parametrize("value", [True, False, None, "1", math.nan, math.inf, -math.inf,
                                   1e31, 10 ** 400, np.float32("nan"), [1], 1j])
def test_check_number_refuses_the_rest(value):
    with pytest.raises(ValueError, match=r"`x` must be a finite number of magnitude <= 1e\+30, "
                                         r"got "):
        V.check_number("x", value)


def test_check_number_bounds():
    assert V.check_number("x", 0, low=0) == 0.0
    assert V.check_number("x", 1, high=1) == 1.0
    with pytest.raises(ValueError, match=r"`x` must be in \(0, 1\), got 0\."):
        V.check_number("x", 0, low=0, high=1, low_open=True, high_open=True)
    with pytest.raises(ValueError, match=r"`x` must be in \[0, 1\), got 1\."):
        V.check_number("x", 1, low=0, high=1, high_open=True)
    with pytest.raises(ValueError, match=r"`x` must be in \[-inf, 2\], got 3\."):
        V.check_number("x", 3, high=2)
    with pytest.raises(ValueError, match=r"`x` must be in \[0.5, inf\], got 0.25\."):
        V.check_number("x", 0.25, low=0.5)


def test_non_negative_positive_and_optional_numbers():
    assert V.check_non_negative("x", 0) == 0.0
    with pytest.raises(ValueError, match=r"`x` must be in \[0, inf\]"):
        V.check_non_negative("x", -1e-9)
    assert V.check_positive("x", 1e-9) == 1e-9
    with pytest.raises(ValueError, match=r"`x` must be in \(0, inf\]"):
        V.check_positive("x", 0)
    assert V.check_optional_number("x", None) is None
    assert V.check_optional_number("x", 2, low=1) == 2.0
    with pytest.raises(ValueError, match="`x` must be in"):
        V.check_optional_number("x", 0, low=1)


@pytest.mark.parametrize("value, expected", [(0, 0), (5, 5), (np.int32(4), 4), (3.0, 3),
                                             (2**63 - 1, 2**63 - 1)])
def test_check_int_accepts_integers_and_integral_floats(value, expected):
    result = V.check_int("n", value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value", [True, None, "3", 2.5, math.nan, math.inf, -1, [3]])
def test_check_int_refuses_the_rest(value):
    with pytest.raises(ValueError, match="`n` must be an integer >= 0, got "):
        V.check_int("n", value)


def test_check_int_minimum_and_size():
    with pytest.raises(ValueError, match="`n` must be an integer >= 1, got 0"):
        V.check_int("n", 0, minimum=1)
    with pytest.raises(ValueError, match=r"`n` must be an integer >= 0 and < 2\*\*63"):
        V.check_int("n", 2**63)
    assert V.check_optional_int("n", None) is None
    assert V.check_optional_int("n", 4, minimum=4) == 4
    with pytest.raises(ValueError, match="`n` must be an integer >= 5"):
        V.check_optional_int("n", 4, minimum=5)


def test_check_choice():
    assert V.check_choice("mode", "min", ("auto", "min", "max")) == "min"
    assert V.check_choice("v", 1, [0, 1, "auto"]) == 1
    with pytest.raises(ValueError, match=r"`v` must be one of 0, 1, 'auto'; got True\."):
        V.check_choice("v", True, [0, 1, "auto"])  # a bool never stands for 1
    with pytest.raises(ValueError, match=r"`mode` must be one of 'min', 'max'; got array"):
        V.check_choice("mode", np.array(["min", "max"]), iter(["min", "max"]))


def test_check_increasing():
    assert V.check_increasing("b", (1, 5.0, np.int64(9))) == [1, 5, 9]
    assert V.check_increasing("b", []) == []
    with pytest.raises(ValueError, match=r"`b` must be strictly increasing, got \[5, 5\]"):
        V.check_increasing("b", [5, 5])
    with pytest.raises(ValueError, match="`b` must be an integer >= 1, got 0"):
        V.check_increasing("b", [0, 3])
    for bad in ("12", 5, None):
        with pytest.raises(ValueError, match="`b` must be a list of strictly increasing "
                                             "integers >= 1"):
            V.check_increasing("b", bad)


def test_check_bool():
    assert V.check_bool("f", True) is True
    assert V.check_bool("f", np.bool_(False)) is False
    for bad in (1, 0, "True", None, np.int64(1)):
        with pytest.raises(ValueError, match="`f` must be True or False, got "):
            V.check_bool("f", bad)


def test_check_verbose():
    assert V.check_verbose(True) == 1 and V.check_verbose(False) == 0
    assert V.check_verbose(2) == 2
    for bad in (-1, 1.5, "1", None):
        with pytest.raises(ValueError, match="`verbose` must be an integer >= 0"):
            V.check_verbose(bad)


def test_check_callable():
    assert V.check_callable("clock", len) is len
    with pytest.raises(ValueError, match="`clock` must be a function returning seconds, got 3"):
        V.check_callable("clock", 3, what="a function returning seconds")
    with pytest.raises(ValueError, match="`fn` must be a function, got None"):
        V.check_callable("fn", None)


def test_check_callbacks():
    one = keras.callbacks.Callback()
    assert V.check_callbacks(None) == []
    assert V.check_callbacks(one) == [one]
    assert V.check_callbacks(c for c in [one, one]) == [one, one]
    for bad in ("cb", 3):
        with pytest.raises(ValueError, match="`callbacks` must be a list of "
                                             "keras.callbacks.Callback objects, got "):
            V.check_callbacks(bad)
    with pytest.raises(ValueError, match="`callbacks` must be keras.callbacks.Callback "
                                         "objects; got 'x'"):
        V.check_callbacks([one, "x"])
