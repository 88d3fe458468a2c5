"""Look schedules up by name, spec string or config."""

from __future__ import annotations

import re
from typing import Any

import keras

from kerastune_kit._spec import parse_call


def _registry() -> dict[str, type]:
    from kerastune_kit import schedules as kit

    classes = [
        kit.Constant, kit.LinearDecay, kit.StepDecay, kit.Warmup, kit.OneCycle,
        kit.WarmupStableDecay, kit.Sequence, kit.ControlledSchedule,
        kit.ExponentialDecay, kit.PiecewiseConstantDecay, kit.PolynomialDecay,
        kit.InverseTimeDecay, kit.CosineDecay, kit.CosineDecayRestarts,
    ]
    names = {}
    for cls in classes:
        names[cls.__name__] = cls
        names[re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()] = cls
    return names


def get(identifier: Any) -> keras.optimizers.schedules.LearningRateSchedule:
    """Returns a learning-rate schedule from a loose description.

    Accepts a ``LearningRateSchedule`` (returned as is), a number (a
    ``Constant``), a name or call-like spec string (``"constant(0.1)"``,
    ``"cosine_decay(initial_learning_rate=0.1, decay_steps=1000)"``,
    ``"OneCycle(1.0, total_steps=500)"``; class names or their snake_case),
    or a config dict as written by ``keras.saving.serialize_keras_object``
    or ``{"class_name": ..., "config": {...}}``.

    Args:
        identifier: what to look up.

    Returns:
        A ``keras.optimizers.schedules.LearningRateSchedule``.

    Raises:
        ValueError: for an unknown name (the known ones are listed) or
            arguments the schedule rejects.

    Example:

    >>> from kerastune_kit import schedules
    >>> s = schedules.get("linear_decay(1.0, decay_steps=10)")
    >>> round(float(s(5)), 6)
    0.5
    """
    from kerastune_kit.schedules.constant import Constant

    if isinstance(identifier, keras.optimizers.schedules.LearningRateSchedule):
        return identifier
    if isinstance(identifier, (int, float)) and not isinstance(identifier, bool):
        return Constant(float(identifier))
    registry = _registry()
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        if name not in registry:
            raise ValueError(_unknown(name, registry))
        config = identifier.get("config", {})
        return registry[name].from_config(config)
    if isinstance(identifier, str):
        name, args, kwargs = parse_call(identifier, what="schedule")
        if name not in registry:
            raise ValueError(_unknown(name, registry))
        try:
            return registry[name](*args, **kwargs)
        except TypeError as err:
            raise ValueError(f"Bad arguments in schedule spec {identifier!r}: {err}") from None
    raise ValueError(
        "Cannot interpret a schedule from "
        f"{identifier!r}: expected a LearningRateSchedule, a number, a spec "
        "string or a config dict."
    )


def _unknown(name, registry) -> str:
    known = ", ".join(sorted(k for k in registry if "_" in k or k.islower()))
    return f"Unknown schedule {name!r}. Known schedules: {known}."
