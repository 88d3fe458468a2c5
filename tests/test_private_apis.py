"""Every private Keras or TensorFlow use of the kit is in ``kerastune_kit/_keras/private.py``.

A private attribute is a dependency on one version; kept in one module, each
with the versions it was checked against and its fallback, an upgrade has
one place to look. Read with ``ast``, anywhere else in the package:

* imports from ``keras.src`` or ``tensorflow.python``, written as ``import``
  statements or through ``importlib.import_module``/``__import__``;
* ``obj._name`` and ``getattr(obj, "_name")`` (``hasattr``, ``setattr``,
  ``delattr``), and any string that is a private name (``"_PrefetchDataset"``,
  ``model.__dict__["_name"]``, a tuple of attribute names), unless the kit
  defines ``_name`` itself and Keras has no private name of that spelling: a
  kit attribute spelled like one of Keras's would hide a use of Keras's.
"""

import ast
import importlib.util
import pathlib
import re

import kerastune_kit

PACKAGE = pathlib.Path(kerastune_kit.__file__).parent
THE_ONE_MODULE = PACKAGE / "_keras" / "private.py"
PRIVATE_PACKAGES = ("keras.src", "tensorflow.python")
ATTRIBUTE_FUNCTIONS = ("getattr", "hasattr", "setattr", "delattr")
IMPORT_FUNCTIONS = ("import_module", "__import__")
PRIVATE_NAME = re.compile(r"_[A-Za-z]\w*")
# Private names of Python itself, not of Keras or TensorFlow.
PYTHON: dict[str, str] = {}


def _trees():
    return {path: ast.parse(path.read_text(), str(path)) for path in PACKAGE.rglob("*.py")}


def _private(name) -> bool:
    return isinstance(name, str) and PRIVATE_NAME.fullmatch(name) is not None


def keras_private_names() -> set[str]:
    """The private names Keras's own source uses: attributes, functions, classes."""
    root = pathlib.Path(importlib.util.find_spec("keras").origin).parent / "src"
    names = set()
    for path in root.rglob("*.py"):
        text = path.read_text(errors="ignore")
        names.update(re.findall(r"\.(_[A-Za-z]\w*)", text))
        names.update(re.findall(r"(?:def|class)\s+(_[A-Za-z]\w*)", text))
    return names


def kit_private_names(trees, keras_names) -> set[str]:
    """The underscore names the kit defines (attributes, functions, classes,
    module-level names), less those Keras uses too."""
    names = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
    # The marks the kit sets on Keras's objects carry its name.
    return ({n for n in names if _private(n) and n not in keras_names} | set(PYTHON)
            | {n for tree in trees.values() for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and _private(node.value)
               and node.value.startswith("_kerastune_kit") for n in [node.value]})


def private_uses(trees, own, keras_names) -> list[str]:
    """Each private Keras/TensorFlow use in ``trees`` as ``file:line: code``.
    A string counts when it is one of Keras's private names or a private
    class name (TensorFlow's ``"_DefaultDistributionStrategy"``)."""
    found = []
    for path, tree in trees.items():
        if path == THE_ONE_MODULE:
            continue
        where = path.name if not path.is_absolute() else path.relative_to(PACKAGE.parent)
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    PRIVATE_PACKAGES):
                found.append(f"{where}:{node.lineno}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                found += [f"{where}:{node.lineno}: import {a.name}" for a in node.names
                          if a.name.startswith(PRIVATE_PACKAGES)]
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.Call) and _called(node) in IMPORT_FUNCTIONS and any(
                    isinstance(a, ast.Constant) and isinstance(a.value, str)
                    and a.value.startswith(PRIVATE_PACKAGES) for a in node.args):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
            elif (isinstance(node, ast.Constant) and _private(node.value)
                  and node.value not in own and id(node) not in docstrings
                  and (node.value in keras_names or node.value[1].isupper())):
                found.append(f"{where}:{node.lineno}: {node.value!r}")
    return found


def _called(call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def test_no_private_keras_or_tensorflow_use_outside_the_one_module():
    trees, keras_names = _trees(), keras_private_names()
    assert private_uses(trees, kit_private_names(trees, keras_names), keras_names) == []


PLANTED = '''
import importlib
import keras
from keras.src.saving import saving_lib
step = optimizer._iterations
up = metric._direction == "up"
model._initial_epoch = 3
lists = getattr(metric, "_user_metrics", None)
default = type(strategy).__name__ == "_DefaultDistributionStrategy"
model.__dict__["_eval_epoch_iterator"] = None
module = importlib.import_module("keras.src.trainers.data_adapters")
'''


def test_the_scan_finds_each_kind_of_private_use():
    """A scan that finds nothing because it looks at nothing would pass too:
    each line of a planted module is found, with the package's own names."""
    trees, keras_names = _trees(), keras_private_names()
    own = kit_private_names(trees, keras_names)
    found = private_uses({pathlib.Path("planted.py"): ast.parse(PLANTED)}, own, keras_names)
    for planted in ("from keras.src.saving", "optimizer._iterations", "metric._direction",
                    "model._initial_epoch", "'_user_metrics'", "'_DefaultDistributionStrategy'",
                    "'_eval_epoch_iterator'", "import_module('keras.src.trainers"):
        assert any(planted in line for line in found), (planted, found)
    assert len(found) == 8
    assert len(trees) > 40
    # _keras/private.py itself is full of them.
    inside = private_uses({pathlib.Path("inside.py"): trees[THE_ONE_MODULE]}, own, keras_names)
    assert any("optimizer._learning_rate" in line for line in inside)
