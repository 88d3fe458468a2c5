"""Build Keras regularizers from short specs: ``get`` and the factories."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras

from kerastune_kit._args.spec import parse_call
from kerastune_kit._args.validation import check_choice, check_non_negative, show

ACCEPTED = (
    "None, a name ('l1', 'l2', 'l1l2', 'orthogonal', 'scheduled' or Keras's "
    "class names L1, L2, L1L2, OrthogonalRegularizer), a call with literal "
    "arguments such as 'l2(1e-4)' or 'l1l2(l1=1e-5, l2=1e-4)', a config dict "
    "({'class_name': ..., 'config': {...}}), or a keras.regularizers.Regularizer"
)


def l1(strength: float = 0.01) -> keras.regularizers.L1:
    """An L1 penalty, ``strength * sum(abs(w))`` (Keras's ``L1``).

    Args:
        strength: the factor, a finite number ``>= 0``. Defaults to 0.01,
            Keras's default.

    Example:

    >>> import numpy as np
    >>> from kerastune_kit import regularizers
    >>> float(regularizers.l1(0.5)(np.array([1.0, -2.0], "float32")))
    1.5
    """
    return keras.regularizers.L1(check_non_negative("strength", strength))


def l2(strength: float = 0.01) -> keras.regularizers.L2:
    """An L2 penalty, ``strength * sum(w ** 2)`` (Keras's ``L2``).

    Note that this is Keras's convention, without the ``1/2`` of some texts:
    its gradient is ``2 * strength * w``.

    Args:
        strength: the factor, a finite number ``>= 0``. Defaults to 0.01,
            Keras's default.

    Example:

    >>> import numpy as np
    >>> from kerastune_kit import regularizers
    >>> float(regularizers.l2(0.5)(np.array([1.0, -2.0], "float32")))
    2.5
    """
    return keras.regularizers.L2(check_non_negative("strength", strength))


def l1l2(l1: float = 0.01, l2: float = 0.01) -> keras.regularizers.L1L2:
    """The sum of an L1 and an L2 penalty (Keras's ``L1L2``).

    Args:
        l1: the L1 factor, a finite number ``>= 0``. Defaults to 0.01.
        l2: the L2 factor, a finite number ``>= 0``. Defaults to 0.01.

    Example:

    >>> import numpy as np
    >>> from kerastune_kit import regularizers
    >>> float(regularizers.l1l2(l1=1.0, l2=0.5)(np.array([1.0, -2.0], "float32")))
    5.5
    """
    return keras.regularizers.L1L2(check_non_negative("l1", l1), check_non_negative("l2", l2))


def orthogonal(factor: float = 0.01,
               mode: str = "rows") -> keras.regularizers.OrthogonalRegularizer:
    """A penalty pushing the rows (or columns) of a 2-D kernel to be orthogonal.

    Keras's ``OrthogonalRegularizer``: ``factor`` times the mean absolute dot
    product between distinct normalised rows (``mode="rows"``) or columns.
    It accepts rank-2 weights only (Dense kernels, not conv kernels).

    Args:
        factor: a finite number ``>= 0``. Defaults to 0.01.
        mode: ``"rows"`` (default) or ``"columns"``.

    Example:

    >>> import numpy as np
    >>> from kerastune_kit import regularizers
    >>> float(regularizers.orthogonal(1.0)(np.eye(3, dtype="float32")))
    0.0
    """
    factor = check_non_negative("factor", factor)
    mode = check_choice("mode", mode, ("rows", "columns"))
    return keras.regularizers.OrthogonalRegularizer(factor=factor, mode=mode)


# name -> (factory, keyword aliases): Keras's own keyword names (``L2(l2=)``)
# are accepted next to the factories' (``l2(strength=)``), so Keras configs
# go through the same checks as specs.
_FACTORIES: dict[str, tuple[Callable[..., Any], dict[str, str]]] = {}


def register(names: tuple[str, ...], factory: Callable[..., Any],
             aliases: dict[str, str] | None = None) -> None:
    """Makes ``get`` build ``factory(*args, **kwargs)`` for each of ``names``.

    The kit's own regularizer classes register themselves from their modules
    (``ScheduledRegularizer`` as ``"scheduled"``), so this module imports none
    of them while they use :func:`get` for their base penalty.
    """
    for name in names:
        _FACTORIES[name] = (factory, dict(aliases or {}))


register(("l1", "L1"), l1, {"l1": "strength"})
register(("l2", "L2"), l2, {"l2": "strength"})
register(("l1l2", "l1_l2", "L1L2"), l1l2)
register(("orthogonal", "orthogonal_regularizer", "OrthogonalRegularizer"), orthogonal)


def known_names() -> list[str]:
    """The names ``get`` understands, sorted."""
    return sorted(_FACTORIES)


def get(identifier: Any) -> keras.regularizers.Regularizer | None:
    """Returns a Keras regularizer from a loose description.

    Accepts ``None`` and a ``keras.regularizers.Regularizer`` (returned as
    they are); a name, ``"l1"``, ``"l2"``, ``"l1l2"``, ``"orthogonal"``,
    ``"scheduled"`` or Keras's class names (a bare name uses the factory's
    defaults: 0.01, and 0.0 for ``"scheduled"``); a call with literal
    arguments, ``"l2(1e-4)"``, ``"L2(l2=1e-4)"``,
    ``"orthogonal(0.1, mode='columns')"``, ``"scheduled(1e-4, base='l2')"``;
    or a config dict, ``{"class_name": ..., "config": {...}}`` (a class
    registered with ``keras.saving.register_keras_serializable`` is
    deserialized by Keras). Strings are parsed with :mod:`ast`, never
    evaluated. The result is Keras's own ``L1``, ``L2``, ``L1L2`` or
    ``OrthogonalRegularizer``, or the kit's :class:`ScheduledRegularizer`.

    Args:
        identifier: what to look up.

    Returns:
        A ``keras.regularizers.Regularizer``, or ``None``.

    Raises:
        ValueError: for an unknown name (the known ones are listed), a
            string that is not a name or a call with literal arguments,
            unexpected arguments, a negative or non-finite strength, or any
            other type; the message says what is accepted.

    Example:

    >>> from kerastune_kit import regularizers
    >>> r = regularizers.get("l1l2(l1=1e-5, l2=1e-4)")
    >>> type(r).__name__, r.l1, r.l2
    ('L1L2', 1e-05, 0.0001)
    """
    if identifier is None:
        return None
    if isinstance(identifier, keras.regularizers.Regularizer):
        return identifier
    if isinstance(identifier, str):
        try:
            name, args, kwargs = parse_call(identifier, what="regularizer")
        except ValueError as err:
            raise ValueError(f"{err} Accepted: {ACCEPTED}.") from None
        return _build(name, args, kwargs, identifier)
    if isinstance(identifier, dict):
        return _from_dict(identifier)
    raise ValueError(
        f"Cannot interpret a regularizer from {show(identifier)} "
        f"(a {type(identifier).__name__}). Accepted: {ACCEPTED}."
    )


def _from_dict(config: dict) -> keras.regularizers.Regularizer:
    name = config.get("class_name")
    inner = config.get("config", {})
    if name not in _FACTORIES:
        registered = config.get("registered_name")
        # Only classes the user registered with Keras are handed to Keras's
        # deserializer: an arbitrary "module" key must not import anything.
        if registered and keras.saving.get_registered_object(registered) is not None:
            obj = keras.saving.deserialize_keras_object(config)
            if isinstance(obj, keras.regularizers.Regularizer):
                return obj
        raise ValueError(_unknown(name, config))
    if not isinstance(inner, dict):
        raise ValueError(
            f"The 'config' of regularizer config {show(config)} must be a dict of "
            f"arguments, got {show(inner)}. Accepted: {ACCEPTED}."
        )
    return _build(name, [], dict(inner), config)


def _build(name: str, args: list, kwargs: dict, source: Any) -> keras.regularizers.Regularizer:
    if name not in _FACTORIES:
        raise ValueError(_unknown(name, source))
    factory, aliases = _FACTORIES[name]
    kwargs = {aliases.get(key, key): value for key, value in kwargs.items()}
    signature = _plain_signature(factory)
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        raise ValueError(
            f"Bad arguments in regularizer spec {show(source)}: {err}. "
            f"{name!r} accepts {name}{signature}."
        ) from None
    try:
        return factory(*args, **kwargs)
    except ValueError as err:
        raise ValueError(
            f"Bad value in regularizer spec {show(source)}: {err} "
            "Strengths must be finite numbers >= 0."
        ) from None


def _plain_signature(factory: Callable[..., Any]) -> inspect.Signature:
    # Without annotations, so error messages read "l2(strength=0.01)".
    signature = inspect.signature(factory)
    return signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )


def _unknown(name: Any, source: Any) -> str:
    return (
        f"Unknown regularizer {name!r} in {show(source)}. Known regularizers: "
        f"{', '.join(known_names())}. Accepted: {ACCEPTED}."
    )
