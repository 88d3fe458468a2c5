"""Every ``python`` block of README.md and of the site's pages (docs/*.md) runs.

A page is one test: its ```` ```python ```` blocks run in order, as one script,
in ONE namespace (a later block sees what an earlier one defined) and in a
fresh working folder, so relative paths (``runs/...``) land there. Blocks
fenced ``text``, ``bash``, ``console``, ``pycon``... are not run; a page must
define what its blocks use (data, models), as a reader's script would. Pages
are found at collection time, so a page added to docs/ is a test at once.

Some blocks need what an install may lack: TensorFlow itself (the
``Trainer``, ``tf.data``: under another Keras backend) or an optional package
(``optuna`` for ``kerastune_kit.search``, anything a block imports). From the
first such block on, the page's blocks are not run (a later block may use
its names) and the test is skipped, with the reason and the blocks that did
run. A failure names the page, the block and its line; the traceback's lines
are the page's own.

CI's newest leg builds the site with ``mkdocs build --strict``.
"""

import ast
import importlib.util
import pathlib
import re
import traceback

import keras
import pytest

pytestmark = pytest.mark.slow  # the documentation's examples train for real (minutes in all)

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A fenced block whose info string starts with `python`, at any indentation
# (inside a list item or an admonition), up to the closing fence at the same.
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python\b[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
BACKEND = keras.backend.backend()
# What only the TensorFlow backend runs: the kit's Trainer, TensorFlow itself.
TENSORFLOW_ONLY = re.compile(r"\bTrainer\b|^\s*(?:import|from)\s+tensorflow\b|\btf\.", re.M)
# The kit's functions that import an optional package when called.
KIT_NEEDS = {
    "optuna": re.compile(r"(?<![\w.])search\(|\bkerastune_kit\.search\("),
    "matplotlib": re.compile(r"\bplot_run\(|\.plot\("),
}


def _rel(path):
    return path.relative_to(ROOT).as_posix()


def blocks(text):
    """``(line, code)`` of each ``python`` block: the 1-based line of its first
    code line in the page, and its code with the fence's indentation removed."""
    found = []
    for match in FENCE.finditer(text):
        indent = match.group("indent")
        lines = match.group("code").split("\n")
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line.lstrip()
                         for line in lines)
        found.append((text.count("\n", 0, match.start("code")) + 1, code))
    return found


def missing_needs(code):
    """What the block needs that this install lacks, as reasons (empty: none)."""
    reasons = []
    if BACKEND != "tensorflow" and TENSORFLOW_ONLY.search(code):
        reasons.append(f"the TensorFlow backend (KERAS_BACKEND={BACKEND})")
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return reasons  # Reported when the block runs.
    modules = {alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    modules |= {name for name, pattern in KIT_NEEDS.items() if pattern.search(code)}
    reasons += [f"{name} (not installed)" for name in sorted(modules)
                if importlib.util.find_spec(name) is None]
    return reasons


def run_block(page, line, code, namespace):
    """Runs a block in ``namespace``; returns its traceback as text, or None."""
    try:
        # Padded so that the traceback's line numbers are the page's own.
        exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)  # noqa: S102
    except Exception as error:  # noqa: BLE001 - any error of the block is the failure
        # The block's frames only, from the page's line on.
        return "".join(traceback.format_exception(type(error), error,
                                                  error.__traceback__.tb_next))
    return None


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_page_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    found = blocks(page.read_text(encoding="utf-8"))
    if not found:
        pytest.skip(f"{_rel(page)} has no python blocks")
    namespace = {"__name__": "__main__"}
    for number, (line, code) in enumerate(found, start=1):
        reasons = missing_needs(code)
        if reasons:
            ran = f"blocks 1-{number - 1} ran and passed" if number > 1 else "no block ran"
            pytest.skip(f"{_rel(page)}: python block {number} of {len(found)} (line {line}) "
                        f"and the blocks after it need {', '.join(reasons)}; {ran}")
        error = run_block(page, line, code, namespace)
        if error:
            pytest.fail(f"{_rel(page)}: python block {number} of {len(found)} (line {line}) "
                        f"raised:\n{error}", pytrace=False)


def _nav_pages():
    """The pages mkdocs.yml's nav lists (``- Title: page.md`` lines)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:\n", 1)[1]
    nav = re.split(r"\n(?=\S)", nav, maxsplit=1)[0]  # Up to the next top-level key.
    return re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?(\S+\.md)\s*$", nav, re.M)


def test_every_page_is_in_the_nav_and_every_nav_page_exists():
    pages = {_rel(path).removeprefix("docs/") for path in PAGES[1:]}
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), f"listed twice in mkdocs.yml's nav: {nav}"
    left_out, lacking = sorted(pages - set(nav)), sorted(set(nav) - pages)
    assert left_out == [], f"pages in docs/ that mkdocs.yml's nav leaves out: {left_out}"
    assert lacking == [], f"pages in mkdocs.yml's nav that docs/ lacks: {lacking}"


def test_blocks_are_found():
    """The collection itself works (a broken regex would pass vacuously)."""
    assert len(blocks((ROOT / "README.md").read_text(encoding="utf-8"))) >= 4
    sample = ("Text.\n\n```python\na = 1\n```\n\n```text\nnot run\n```\n\n"
              "- item\n\n    ```python\n    b = a + 1\n    ```\n")
    assert blocks(sample) == [(4, "a = 1\n"), (14, "b = a + 1\n")]
    assert missing_needs("import no_such_package_here") == [
        "no_such_package_here (not installed)"]
