"""_spec.parse_call: a name called with literals, and a ValueError for everything else."""

import pytest

from kerastune_kit._args.spec import MAX_DEPTH, MAX_LENGTH, parse_call


@pytest.mark.parametrize("spec, expected", [
    ("l2", ("l2", [], {})),
    ("  l2  ", ("l2", [], {})),
    ("l2()", ("l2", [], {})),
    ("l2(1e-4)", ("l2", [1e-4], {})),
    ("l1l2(l1=1e-5, l2=0.5)", ("l1l2", [], {"l1": 1e-5, "l2": 0.5})),
    ("f(1, 'a', None, True, False, x=-3)", ("f", [1, "a", None, True, False], {"x": -3})),
    ("seq([0.1, 'constant(0.2)'], (5,), {'k': [1, 2]}, {3})",
     ("seq", [[0.1, "constant(0.2)"], (5,), {"k": [1, 2]}, {3}], {})),
    (f"f({2**63 - 1}, {-(2**63) + 1}, 1e30)", ("f", [2**63 - 1, -(2**63) + 1, 1e30], {})),
])
def test_names_and_literal_arguments(spec, expected):
    assert parse_call(spec, what="schedule") == expected


def test_the_limits_themselves_are_accepted():
    text = "a" * (MAX_LENGTH - 5)
    assert parse_call(f"f('{text}')", what="x") == ("f", [text], {})  # MAX_LENGTH characters
    nested = "f(" + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + ")"
    assert parse_call(nested, what="x")[0] == "f"


def test_a_spec_must_be_a_string():
    with pytest.raises(ValueError, match="A regularizer spec must be a string, got int."):
        parse_call(3, what="regularizer")


def test_too_long_is_refused_before_parsing_and_shortened_in_the_message():
    spec = "f(" + "1," * 600 + ")"
    with pytest.raises(ValueError, match=f"it has {len(spec)} characters") as info:
        parse_call(spec, what="schedule")
    assert len(str(info.value)) < 400
    assert "Cannot parse schedule spec" in str(info.value)


def test_too_deep_is_refused_before_parsing():
    spec = "f(" + "[" * MAX_DEPTH + "]" * MAX_DEPTH + ")"
    with pytest.raises(ValueError, match=f"brackets nested deeper than {MAX_DEPTH}"):
        parse_call(spec, what="schedule")


@pytest.mark.parametrize("spec", [
    "", "   ", "l2(", "l2)", "1 + 1", "os.system('ls')", "l2(1)(2)", "l2[0]",
    "lambda: 1", "[l2(1)]", "'l2'", "\x00",
])
def test_what_is_not_a_name_or_a_call_of_a_name(spec):
    with pytest.raises(ValueError, match=r"Cannot parse regularizer spec .*: expected a "
                                         r"regularizer name such as 'name'"):
        parse_call(spec, what="regularizer")


@pytest.mark.parametrize("spec", [
    "f(x)", "f(g(1))", "f(1 + 1)", "f(*[1])", "f(**{'a': 1})", "f(float('nan'))",
    "f(1e999)", "f(-1e999)", "f(1e31)", f"f({2**63})", f"f({-(2**63)})", "f(1j)",
    "f([1e999])", "f({'a': 1e999})", "f({1e999: 1})", "f(k=1e999)", "f((1, 2**64))",
])
def test_arguments_must_be_sane_literals(spec):
    with pytest.raises(ValueError, match=r"arguments must be literals \(finite numbers of "
                                         r"magnitude <= 1e\+30, ints below 2\*\*63"):
        parse_call(spec, what="schedule")


def test_nothing_is_evaluated(tmp_path):
    marker = tmp_path / "ran"
    spec = f"f(open({str(marker)!r}, 'w'))"
    with pytest.raises(ValueError):
        parse_call(spec, what="schedule")
    assert not marker.exists()
