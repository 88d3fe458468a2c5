"""Every docstring example of the kit runs: a docstring ``Example:`` is a test.

Two forms are collected from every public module, class, function and
method: doctests (``>>>``, checked against their printed output, as
``pytest --doctest-modules`` would) and fenced ``python`` blocks, which are
run as scripts and must not raise. A fenced block may use, without defining
them, the names a user's script has at that point: ``model`` (a small
compiled classifier), ``x``/``y`` (its training data, also as
``x_train``/``y_train``), ``xv``/``yv`` (validation data, also as
``x_val``/``y_val``), ``keras`` and ``np``. Each example runs in a fresh
folder with a fresh namespace, so relative paths (``runs/...``) land there.
"""

import doctest
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re

import keras
import numpy as np
import pytest

import kerastune_kit

BACKEND = keras.backend.backend()
FENCE = re.compile(r"```python\n(.*?)```", re.S)
# Modules that need TensorFlow itself (the Trainer, the demo that runs it).
TENSORFLOW_MODULES = ("kerastune_kit.training", "kerastune_kit.demo", "kerastune_kit.cli")
# Examples too slow for the suite, and where else they run.
SLOW = {
    "kerastune_kit.demo.run_demo": "the demo runs as a subprocess in tests/test_cli.py",
}


def _modules():
    names = ["kerastune_kit"] + [info.name for info in pkgutil.walk_packages(
        kerastune_kit.__path__, "kerastune_kit.")]
    for name in sorted(names):
        if BACKEND != "tensorflow" and name.startswith(TENSORFLOW_MODULES):
            continue
        yield name, importlib.import_module(name)


def _documented(module_name, module):
    """``(qualified name, object)`` for the module and what it defines publicly."""
    yield module_name, module
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield f"{module_name}.{name}", obj
        if inspect.isclass(obj):
            for attribute, member in vars(obj).items():
                member = getattr(member, "__func__", member)
                if not attribute.startswith("_") and inspect.isfunction(member):
                    yield f"{module_name}.{name}.{attribute}", member


def _examples():
    fenced, doctests = [], []
    for module_name, module in _modules():
        for name, obj in _documented(module_name, module):
            doc = inspect.getdoc(obj) or ""
            for i, block in enumerate(FENCE.findall(doc)):
                fenced.append(pytest.param(block, id=f"{name}[{i}]", marks=_marks(name)))
        if any(test.examples for test in doctest.DocTestFinder().find(module)):
            doctests.append(pytest.param(module, id=module_name))
    return fenced, doctests


# Examples that need an extra the oldest leg does not install.
NEEDS = {"kerastune_kit.tuning.search.search": "optuna"}


def _marks(name):
    if name in SLOW:
        return [pytest.mark.skip(reason=SLOW[name])]
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        return [pytest.mark.skip(reason=f"needs {NEEDS[name]} (the `search` extra)")]
    return []


FENCED, DOCTESTS = _examples()


@pytest.fixture
def user_namespace(tmp_path, monkeypatch):
    """What a user's script has defined when an example starts."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    xv = rng.normal(size=(32, 8)).astype("float32")
    yv = (xv[:, 0] > 0).astype("int32") + (xv[:, 1] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return {"keras": keras, "np": np, "model": model, "x": x, "y": y, "x_train": x,
            "y_train": y, "xv": xv, "yv": yv, "x_val": xv, "y_val": yv,
            "__name__": "__docstring_example__"}


@pytest.mark.slow
@pytest.mark.parametrize("code", FENCED)
def test_fenced_example_runs(code, user_namespace):
    exec(compile(code, "<docstring example>", "exec"), user_namespace)  # noqa: S102


@pytest.mark.parametrize("module", DOCTESTS)
def test_doctests_pass(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} doctest lines failed"


def test_examples_are_found():
    """The collection itself works (a broken regex would pass vacuously)."""
    assert len(FENCED) >= 15 and len(DOCTESTS) >= 8
    assert os.path.basename(__file__) == "test_docstring_examples.py"
