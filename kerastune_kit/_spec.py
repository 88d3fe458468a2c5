"""A small strict parser for call-like specs such as ``"l2(1e-4)"``.

Used by the schedule and regularizer look-ups. It parses with :mod:`ast` and
accepts only a bare name called with literal arguments, so nothing is ever
evaluated.
"""

from __future__ import annotations

import ast
from typing import Any


def parse_call(spec: str, *, what: str) -> tuple[str, list[Any], dict[str, Any]]:
    """Splits ``"name(a, k=v)"`` into ``(name, [a], {"k": v})``.

    A bare ``"name"`` gives empty arguments. Anything else (attribute access,
    nested calls, expressions) raises ``ValueError`` saying what is accepted.
    """
    text = spec.strip()
    accepted = (
        f"a {what} name such as 'name' or a call with literal arguments such "
        "as 'name(0.1, key=2)'"
    )
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ValueError(f"Cannot parse {what} spec {spec!r}: expected {accepted}.") from None
    if isinstance(node, ast.Name):
        return node.id, [], {}
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"Cannot parse {what} spec {spec!r}: expected {accepted}.")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError
            kwargs[kw.arg] = ast.literal_eval(kw.value)
    except ValueError:
        raise ValueError(
            f"Cannot parse {what} spec {spec!r}: arguments must be literals "
            f"(numbers, strings, lists); expected {accepted}."
        ) from None
    return node.func.id, args, kwargs
