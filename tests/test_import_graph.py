"""The kit's modules import each other without a circle.

The graph is read from the source with :mod:`ast`: an edge for every import
of a kit module, at module level or inside a function (an import deferred
into a function hides a circle, it does not remove it). ``from package
import name`` is an edge to ``package.name`` when that is a module, else to
``package``; a module's own package ``__init__`` is not an edge (Python
runs it first for every module, whatever the module imports).
"""

import ast
import pathlib

import kerastune_kit

ROOT = pathlib.Path(kerastune_kit.__file__).parent


def modules() -> dict[str, tuple[pathlib.Path, bool]]:
    """Every kit module's dotted name: (its file, whether it is a package)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def imported(name: str, path: pathlib.Path, package: bool, known) -> set[str]:
    """The kit modules that module ``name`` imports anywhere in its code."""
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names if alias.name in known)
        elif (isinstance(node, ast.Call) and _called(node) in ("import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant)
              and node.args[0].value in known):
            edges.add(node.args[0].value)  # importlib.import_module("kerastune_kit.x")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package upwards
                anchor = name.split(".") if package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    edges.add(target)
                elif base in known:
                    edges.add(base)
    edges.discard(name)
    return edges


def _called(call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, package, known)
            for name, (path, package) in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None."""
    done, path, on_path = set(), [], set()

    def visit(node):
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        on_path.discard(path.pop())
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "kerastune_kit.schedules.lookup" in graph["kerastune_kit.schedules._base"]
    assert "kerastune_kit.regularizers.lookup" in graph[
        "kerastune_kit.regularizers.scheduled_regularizer"]
    # A deferred import counts: the command line imports the demo inside a function.
    assert "kerastune_kit.demo" in graph["kerastune_kit.cli"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle_among_kit_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_an_importlib_import_is_an_edge(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import importlib\n\ndef later():\n"
                       "    return importlib.import_module('kerastune_kit.demo')\n")
    assert imported("kerastune_kit.planted", planted, False, modules()) == {"kerastune_kit.demo"}
