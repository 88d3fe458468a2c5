"""Look schedules up by name, spec string or config."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Mapping
from typing import Any

import keras

from kerastune_kit._args.spec import parse_call
from kerastune_kit._args.validation import (
    check_bool,
    check_int,
    check_non_negative,
    check_number,
    check_optional_number,
    check_positive,
    show,
)
from kerastune_kit.schedules import _spec_names

# Keras's own schedules, by name as the kit's (which register themselves).
for _cls in (keras.optimizers.schedules.ExponentialDecay,
             keras.optimizers.schedules.PiecewiseConstantDecay,
             keras.optimizers.schedules.PolynomialDecay,
             keras.optimizers.schedules.InverseTimeDecay,
             keras.optimizers.schedules.CosineDecay,
             keras.optimizers.schedules.CosineDecayRestarts):
    _spec_names.add(_cls)


def _registry() -> Mapping[str, type]:
    """Every schedule name ``get`` knows, and its class."""
    return _spec_names.classes()


def get(identifier: Any) -> keras.optimizers.schedules.LearningRateSchedule:
    """Returns a learning-rate schedule from a loose description.

    Accepts a ``LearningRateSchedule`` (returned as is), a number (a
    ``Constant``), a name or call-like spec string (``"constant(0.1)"``,
    ``"cosine_decay(initial_learning_rate=0.1, decay_steps=1000)"``,
    ``"OneCycle(1.0, total_steps=500)"``; class names or their snake_case),
    or a config dict as written by ``keras.saving.serialize_keras_object``
    or ``{"class_name": ..., "config": {...}}``. Spec strings (at most
    1,000 characters) are parsed with :mod:`ast`, never evaluated; their
    arguments are literals with finite numbers of magnitude <= 1e30. The
    arguments of Keras's own schedules are checked here as the kit's are
    (Keras accepts e.g. a negative or nan rate and fails at use).

    Args:
        identifier: what to look up.

    Returns:
        A ``keras.optimizers.schedules.LearningRateSchedule``.

    Raises:
        ValueError: for an unknown name (the known ones are listed), a spec
            that is not a name or a call with literal arguments, or
            arguments the schedule rejects.

    Example:

    >>> from kerastune_kit import schedules
    >>> s = schedules.get("linear_decay(1.0, decay_steps=10)")
    >>> round(float(s(5)), 6)
    0.5
    """
    if isinstance(identifier, keras.optimizers.schedules.LearningRateSchedule):
        return identifier
    registry = _registry()
    if isinstance(identifier, numbers.Real) and not isinstance(identifier, bool):
        try:
            return registry["Constant"](identifier)
        except ValueError as err:
            raise ValueError(
                f"Cannot make a constant schedule from {show(identifier)}: {err}") from None
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        if not isinstance(name, str) or name not in registry:
            raise ValueError(_unknown(name, registry))
        config = identifier.get("config", {})
        if not isinstance(config, dict):
            raise ValueError(
                f"The 'config' of schedule config {show(identifier)} must be a dict of "
                f"arguments, got {show(config)}.")
        _, config = _check_keras_arguments(registry[name], [], config, identifier)
        try:
            return registry[name].from_config(config)
        except (TypeError, KeyError) as err:
            raise ValueError(f"Bad config for schedule {show(identifier)}: {err}") from None
    if isinstance(identifier, str):
        name, args, kwargs = parse_call(identifier, what="schedule")
        if name not in registry:
            raise ValueError(_unknown(name, registry))
        args, kwargs = _check_keras_arguments(registry[name], args, kwargs, identifier)
        try:
            return registry[name](*args, **kwargs)
        except TypeError as err:
            raise ValueError(f"Bad arguments in schedule spec {show(identifier)}: {err}") from None
    raise ValueError(
        "Cannot interpret a schedule from "
        f"{show(identifier)}: expected a LearningRateSchedule, a number, a spec "
        "string or a config dict."
    )


def _number_list(name, value):
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"`{name}` must be a non-empty list of numbers, got {show(value)}.")
    return [check_number(name, v) for v in value]


def _name(name, value):
    if not isinstance(value, str):
        raise ValueError(f"`{name}` must be a string, got {show(value)}.")
    return value


# Checks of Keras's own schedules' arguments, by argument name.
_KERAS_CHECKS = {
    "initial_learning_rate": check_non_negative,
    "decay_steps": lambda n, v: check_int(n, v, minimum=1),
    "first_decay_steps": lambda n, v: check_int(n, v, minimum=1),
    "warmup_steps": check_int,
    "decay_rate": check_positive,
    "end_learning_rate": check_non_negative,
    "warmup_target": lambda n, v: check_optional_number(n, v, low=0.0),
    "power": check_positive,
    "alpha": lambda n, v: check_number(n, v, low=0.0, high=1.0),
    "t_mul": check_positive,
    "m_mul": check_positive,
    "staircase": check_bool,
    "cycle": check_bool,
    "boundaries": _number_list,
    "values": lambda n, v: [check_non_negative(n, x) for x in _number_list(n, v)],
    "name": _name,
}


# Float-valued arguments of Keras's schedules: an int there (``cosine_decay(1, 100)``)
# is made a float, as older Keras releases multiply it with float tensors.
_KERAS_FLOATS = {"initial_learning_rate", "end_learning_rate", "warmup_target", "alpha",
                 "decay_rate", "power", "t_mul", "m_mul"}


def _check_keras_arguments(cls, args, kwargs, source) -> tuple[list, dict]:
    """Checks the arguments of Keras's own schedules (the kit's check their own);
    returns them by name, float-valued ones as floats."""
    if not cls.__module__.startswith("keras."):
        return list(args), dict(kwargs)
    try:
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
    except TypeError as err:
        raise ValueError(f"Bad arguments in schedule spec {show(source)}: {err}") from None
    for name, value in list(bound.arguments.items())[1:]:
        check = _KERAS_CHECKS.get(name)
        if check is not None:
            try:
                check(name, value)
            except ValueError as err:
                raise ValueError(f"Bad value in schedule spec {show(source)}: {err}") from None
        if name in _KERAS_FLOATS and isinstance(value, numbers.Integral) and not isinstance(
                value, bool):
            bound.arguments[name] = float(value)
    named = {}
    for name, value in list(bound.arguments.items())[1:]:
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            return list(args), dict(kwargs)  # no Keras schedule has one; keep as given
        else:
            named[name] = value
    return [], named


def _unknown(name, registry) -> str:
    known = ", ".join(sorted(k for k in registry if "_" in k or k.islower()))
    return f"Unknown schedule {show(name)}. Known schedules: {known}."
