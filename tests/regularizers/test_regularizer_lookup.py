"""regularizers.get and the factories: Keras's own classes, strict specs."""

import math

import keras
import numpy as np
import pytest

from kerastune_kit import regularizers as R

W = np.array([[0.5, -1.5, 2.0], [-0.25, 0.75, -3.0]], dtype="float32")


def value(regularizer, w=W):
    return float(keras.ops.convert_to_numpy(regularizer(keras.ops.convert_to_tensor(w))))


def orthogonal_closed_form(w, factor, mode):
    w = w.astype("float64")
    if mode == "columns":
        w = w.T
    rows = w / np.linalg.norm(w, axis=1, keepdims=True)
    product = rows @ rows.T
    n = rows.shape[0]
    off_diagonal = np.abs(product - np.diag(np.diag(product))).sum()
    return factor * 0.5 * off_diagonal / (n * (n - 1) / 2)


@pytest.mark.parametrize("spec, cls, expected", [
    ("l1(0.1)", keras.regularizers.L1, 0.1 * np.abs(W).sum()),
    ("L1(l1=0.1)", keras.regularizers.L1, 0.1 * np.abs(W).sum()),
    ("l2(0.1)", keras.regularizers.L2, 0.1 * (W ** 2).sum()),
    ("l2(strength=0.1)", keras.regularizers.L2, 0.1 * (W ** 2).sum()),
    ("L2(l2=0.1)", keras.regularizers.L2, 0.1 * (W ** 2).sum()),
    ("l1l2(l1=0.1, l2=0.3)", keras.regularizers.L1L2,
     0.1 * np.abs(W).sum() + 0.3 * (W ** 2).sum()),
    ("l1_l2(0.1, 0.3)", keras.regularizers.L1L2, 0.1 * np.abs(W).sum() + 0.3 * (W ** 2).sum()),
    ("orthogonal(0.5)", keras.regularizers.OrthogonalRegularizer,
     orthogonal_closed_form(W, 0.5, "rows")),
    ("OrthogonalRegularizer(factor=0.5, mode='columns')", keras.regularizers.OrthogonalRegularizer,
     orthogonal_closed_form(W, 0.5, "columns")),
])
def test_specs_give_keras_classes_with_the_closed_form_penalty(spec, cls, expected):
    regularizer = R.get(spec)
    assert type(regularizer) is cls
    assert value(regularizer) == pytest.approx(expected, rel=1e-6)
    # The same maths as Keras's class built directly: nothing is rewritten.
    direct = cls(**regularizer.get_config())
    assert value(regularizer) == value(direct)


def test_factories_match_keras_directly():
    assert value(R.l1(0.2)) == value(keras.regularizers.L1(0.2))
    assert value(R.l2(0.2)) == value(keras.regularizers.L2(0.2))
    assert value(R.l1l2(0.2, 0.4)) == value(keras.regularizers.L1L2(0.2, 0.4))
    assert value(R.orthogonal(0.3, "columns")) == value(
        keras.regularizers.OrthogonalRegularizer(0.3, "columns"))
    assert value(R.l2(0.2)) == pytest.approx(0.2 * (W ** 2).sum(), rel=1e-6)


def test_bare_names_use_the_keras_default_strength():
    assert float(R.get("l1").l1) == pytest.approx(0.01)
    assert R.get("l2").l2 == pytest.approx(0.01)
    assert (R.get("l1l2").l1, R.get("l1l2").l2) == (0.01, 0.01)
    assert R.get("orthogonal").get_config() == {"factor": pytest.approx(0.01), "mode": "rows"}


def test_none_instances_and_configs():
    assert R.get(None) is None
    keras_l2 = keras.regularizers.L2(0.3)
    assert R.get(keras_l2) is keras_l2
    for source in (keras.saving.serialize_keras_object(keras_l2),
                   {"class_name": "L2", "config": {"l2": 0.3}}):
        again = R.get(source)
        assert type(again) is keras.regularizers.L2 and again.l2 == pytest.approx(0.3)
    ortho = R.get(keras.saving.serialize_keras_object(R.orthogonal(0.2, "columns")))
    assert ortho.get_config() == {"factor": pytest.approx(0.2), "mode": "columns"}


def test_a_user_registered_regularizer_config_is_deserialized_by_keras():
    @keras.saving.register_keras_serializable(package="kit_test")
    class Sum(keras.regularizers.Regularizer):
        def __init__(self, k=1.0):
            self.k = k

        def __call__(self, x):
            return self.k * keras.ops.sum(x)

        def get_config(self):
            return {"k": self.k}

    again = R.get(keras.saving.serialize_keras_object(Sum(2.0)))
    assert isinstance(again, Sum) and again.k == 2.0


BAD_SPECS = [
    ("l3", ["Unknown regularizer 'l3'", "Known regularizers:", "l1l2"]),
    ("L3(0.1)", ["Unknown regularizer 'L3'", "Known regularizers:"]),
    ("l2(-1)", ["'l2(-1)'", "got -1", ">= 0"]),
    ("l1(-0.5)", ["'l1(-0.5)'", "got -0.5", ">= 0"]),
    ("l2(1e999)", ["'l2(1e999)'", "finite"]),
    ("l1l2(l1=1e-5, l2=-2)", ["got -2", ">= 0"]),
    ("l2(nan)", ["'l2(nan)'", "literals", "Accepted:"]),
    ("l2(float('nan'))", ["literals", "Accepted:"]),
    ("l2(", ["Cannot parse", "'l2('", "Accepted:"]),
    ("", ["Cannot parse", "Accepted:"]),
    ("os.system('x')", ["Cannot parse", "Accepted:"]),
    ("__import__('os').system('x')", ["Cannot parse", "Accepted:"]),
    ("l2(1e-3) + l1(1e-3)", ["Cannot parse", "Accepted:"]),
    ("l1l2(l1=1e-5, l3=1)", ["unexpected keyword argument 'l3'", "l1l2(l1=0.01, l2=0.01)"]),
    ("l2(1, 2)", ["too many positional arguments", "l2(strength=0.01)"]),
    ("l2('big')", ["'big'", "finite number"]),
    ("l2(True)", ["True", "finite number"]),
    ("orthogonal(0.1, mode='diagonal')", ["'diagonal'", "'rows', 'columns'"]),
    ("scheduled(-1)", ["got -1", ">= 0"]),
    (42, ["42", "int", "Accepted:"]),
    (1e-3, ["0.001", "Accepted:"]),
    (lambda w: 0.0, ["function", "Accepted:"]),
    ({"class_name": "L3", "config": {}}, ["Unknown regularizer 'L3'", "Known regularizers:"]),
    ({"class_name": "L2", "config": {"l2": -1.0}}, ["got -1", ">= 0"]),
    ({"class_name": "L2", "config": {"l3": 1.0}}, ["unexpected keyword argument 'l3'"]),
    ({"class_name": "L2", "config": [1.0]}, ["must be a dict", "Accepted:"]),
    ({"module": "os", "class_name": "system", "config": {}, "registered_name": "os>system"},
     ["Unknown regularizer 'system'", "Known regularizers:"]),
]


# Ids that every process names alike (pytest-xdist compares them): a
# function's name, not its repr with an address.
@pytest.mark.parametrize("spec, fragments", BAD_SPECS,
                         ids=[s.__name__ if callable(s) else repr(s) for s, _ in BAD_SPECS])
def test_every_bad_spec_says_what_was_wrong_and_what_is_accepted(spec, fragments):
    with pytest.raises(ValueError) as info:
        R.get(spec)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("call", [
    lambda: R.l1(-1.0), lambda: R.l2(float("nan")), lambda: R.l2(math.inf),
    lambda: R.l1l2(l1=0.1, l2=-0.1), lambda: R.orthogonal(-1.0),
    lambda: R.orthogonal(0.1, mode="diag"), lambda: R.l2("0.1"),
])
def test_factories_reject_bad_strengths(call):
    with pytest.raises(ValueError, match="must be"):
        call()
