"""Every private Keras or TensorFlow use of the kit is in ``kerastune_kit/_keras_private.py``.

A private attribute is a dependency on one version; kept in one module, each
with the versions it was checked against and its fallback, an upgrade has
one place to look. Read with ``ast``: imports from ``keras.src`` or
``tensorflow.python``, and any ``obj._name`` (or ``getattr(obj, "_name")``)
whose ``_name`` the kit does not define itself, anywhere else in the package.
"""

import ast
import pathlib

import kerastune_kit

PACKAGE = pathlib.Path(kerastune_kit.__file__).parent
THE_ONE_MODULE = PACKAGE / "_keras_private.py"
PRIVATE_PACKAGES = ("keras.src", "tensorflow.python")
ATTRIBUTE_FUNCTIONS = ("getattr", "hasattr", "setattr", "delattr")
# Private names of Python itself, not of Keras or TensorFlow.
PYTHON = {"_initializing": "importlib marks a module spec while the module is being imported "
                            "(kerastune_kit._registration waits for it)"}


def _trees():
    return {path: ast.parse(path.read_text(), str(path)) for path in PACKAGE.rglob("*.py")}


def _kit_private_names(trees) -> set[str]:
    """The underscore names the kit defines: its attributes, functions, classes
    and module-level names."""
    names = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                if isinstance(node.ctx, ast.Store) and isinstance(node.slice.value, str):
                    names.add(node.slice.value)  # obj.__dict__["_name"] = ...
    return {n for n in names if n.startswith("_") and not n.startswith("__")} | set(PYTHON)


def _private(name) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses() -> list[str]:
    trees = _trees()
    own = _kit_private_names(trees)
    found = []
    for path, tree in trees.items():
        if path == THE_ONE_MODULE:
            continue
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    PRIVATE_PACKAGES):
                found.append(f"{where}:{node.lineno}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                found += [f"{where}:{node.lineno}: import {a.name}" for a in node.names
                          if a.name.startswith(PRIVATE_PACKAGES)]
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ATTRIBUTE_FUNCTIONS and len(node.args) >= 2
                  and isinstance(node.args[1], ast.Constant)
                  and isinstance(node.args[1].value, str) and _private(node.args[1].value)
                  and node.args[1].value not in own):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_private_keras_or_tensorflow_use_outside_the_one_module():
    assert private_uses() == []


def test_the_scan_finds_a_private_use():
    """A scan that finds nothing because it looks at nothing would pass too."""
    tree = ast.parse("import keras\nkeras.layers.Dense(1)._tracker\n"
                     "from keras.src.saving import saving_lib\n")
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "_tracker" in names and "_tracker" not in _kit_private_names(_trees())
    assert len(list(PACKAGE.rglob("*.py"))) > 40
    # _keras_private.py itself is full of them.
    own = _kit_private_names(_trees())
    inside = [n.attr for n in ast.walk(ast.parse(THE_ONE_MODULE.read_text()))
              if isinstance(n, ast.Attribute) and _private(n.attr) and n.attr not in own]
    assert inside  # e.g. optimizer._learning_rate
