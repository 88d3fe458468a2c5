"""Griffe extensions for the docs build (mkdocs.yml: the mkdocstrings Python
handler's ``extensions:``).

``LazyNames``: ``kerastune_kit/__init__.py`` imports most public names on
first use (``__getattr__`` and its ``_NAMES`` table), which static analysis
cannot see. This extension reads ``_NAMES`` from the source and adds each name
to the package as an alias of the object it names, so
``::: kerastune_kit.EarlyStopping`` and ``[...][kerastune_kit.fit_budgeted]``
resolve as they do at runtime. Where the named module has a submodule of the
same name (``recipes.fit_budgeted`` is a module and, once its package is
imported, the function), the alias points at the object inside the submodule,
as the runtime does.

``DoctestBlocks``: a docstring's doctest (``>>>`` lines and their expected
output, up to a blank line) outside a fenced block becomes a fenced ``pycon``
block, so it renders as code under Keras's ``Example:`` heading (Google style
only fences doctests under ``Examples:``). The docstrings are untouched; only
the text the site renders changes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import griffe

_TABLE = "_NAMES"
_PROMPT = re.compile(r"^(\s*)>>>( |$)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _lazy_names(path: Path) -> dict[str, str]:
    """The ``_NAMES`` dict literal of a package's ``__init__.py``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == _TABLE for t in targets):
            return ast.literal_eval(node.value)
    return {}


class LazyNames(griffe.Extension):
    """Aliases for the names a package's ``__getattr__`` imports lazily."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        if "__getattr__" not in pkg.members or not isinstance(pkg.filepath, Path):
            return
        for name, module in _lazy_names(pkg.filepath).items():
            if name in pkg.members:
                continue
            target = f"{module}.{name}"
            found = loader.modules_collection.get_member(target)
            # A submodule named like the object it defines: the object.
            while isinstance(found, griffe.Module) and name in found.members:
                target = f"{target}.{name}"
                found = found.members[name]
            pkg.set_member(name, griffe.Alias(name, target, parent=pkg))


def fence_doctests(text: str) -> str:
    """``text`` with each doctest outside a fence wrapped in a ``pycon`` fence."""
    out, in_fence, in_doctest, indent = [], False, False, ""
    for line in text.split("\n"):
        if in_doctest and not line.strip():
            out.append(f"{indent}```")
            in_doctest = False
        if not in_doctest and _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and not in_doctest and (match := _PROMPT.match(line)):
            indent = match.group(1)
            out.append(f"{indent}```pycon")
            in_doctest = True
        out.append(line)
    if in_doctest:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Doctests rendered as code blocks."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
