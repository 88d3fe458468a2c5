"""A small strict parser for call-like specs such as ``"l2(1e-4)"``.

Used by the schedule and regularizer look-ups. It parses with :mod:`ast` and
accepts only a bare name called with literal arguments, so nothing is ever
evaluated. Every string gets an answer, a result or a ``ValueError``, at
once: the length and the bracket nesting are bounded before parsing, and
numbers must be finite and of a sane size.
"""

from __future__ import annotations

import ast
import math
from typing import Any

MAX_LENGTH = 1000   # characters of a spec
MAX_DEPTH = 16      # nested brackets in a spec
MAX_NUMBER = 1e30   # largest magnitude of a float argument
MAX_INT = 2**63     # ints must be below this in magnitude (int64)


def parse_call(spec: str, *, what: str) -> tuple[str, list[Any], dict[str, Any]]:
    """Splits ``"name(a, k=v)"`` into ``(name, [a], {"k": v})``.

    A bare ``"name"`` gives empty arguments. Arguments are literals: numbers
    (finite, ``|x| <= 1e30``; ints ``|x| < 2**63``), strings, ``True``,
    ``False``, ``None`` and lists, tuples, sets and dicts of those. Anything
    else (attribute access, nested calls, expressions, a spec longer than
    1,000 characters or nested deeper than 16 brackets) raises
    ``ValueError`` naming the spec and saying what is accepted.
    """
    accepted = (
        f"a {what} name such as 'name' or a call with literal arguments such "
        f"as 'name(0.1, key=2)', at most {MAX_LENGTH} characters"
    )
    if not isinstance(spec, str):
        raise ValueError(f"A {what} spec must be a string, got {type(spec).__name__}.")
    shown = _shorten(spec)
    if len(spec) > MAX_LENGTH:
        raise ValueError(
            f"Cannot parse {what} spec {shown}: it has {len(spec)} characters; "
            f"expected {accepted}.")
    if _bracket_depth(spec) > MAX_DEPTH:
        raise ValueError(
            f"Cannot parse {what} spec {shown}: brackets nested deeper than {MAX_DEPTH}; "
            f"expected {accepted}.")
    try:
        node = ast.parse(spec.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        raise ValueError(f"Cannot parse {what} spec {shown}: expected {accepted}.") from None
    if isinstance(node, ast.Name):
        return node.id, [], {}
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"Cannot parse {what} spec {shown}: expected {accepted}.")
    try:
        if any(kw.arg is None for kw in node.keywords):
            raise ValueError
        args = [_literal(a) for a in node.args]
        kwargs = {kw.arg: _literal(kw.value) for kw in node.keywords}
    except (ValueError, TypeError, RecursionError, MemoryError, OverflowError):
        raise ValueError(
            f"Cannot parse {what} spec {shown}: arguments must be literals (finite "
            f"numbers of magnitude <= {MAX_NUMBER:g}, ints below 2**63, strings, "
            f"lists); expected {accepted}."
        ) from None
    return node.func.id, args, kwargs


def _literal(node: ast.AST) -> Any:
    value = ast.literal_eval(node)
    _check_numbers(value)
    return value


def _check_numbers(value: Any) -> None:
    """Raises ValueError for a complex, non-finite or too large number inside ``value``."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        return
    if isinstance(value, int):
        if abs(value) >= MAX_INT:
            raise ValueError
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise ValueError
    elif isinstance(value, dict):
        for item in (*value, *value.values()):
            _check_numbers(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _check_numbers(item)
    else:  # complex
        raise ValueError


def _bracket_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def _shorten(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
