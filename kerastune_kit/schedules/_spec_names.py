"""The schedules' names for specs: each schedule's module registers its class here.

A leaf (it imports nothing of the kit), so that :func:`kerastune_kit.schedules.get`
reads the classes from it instead of importing the modules that define them,
which import the look-up themselves (``Warmup("constant(0.1)", 5)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

import keras

_CLASSES: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: serializable by Keras (package ``kerastune_kit``) and
    known to ``schedules.get`` by its class name and its snake_case name."""
    keras.saving.register_keras_serializable(package="kerastune_kit")(cls)
    add(cls)
    return cls


def add(cls: type) -> None:
    """Makes ``cls`` known to ``schedules.get`` as ``"OneCycle"`` and ``"one_cycle"``."""
    _CLASSES[cls.__name__] = cls
    _CLASSES[re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()] = cls


def classes() -> Mapping[str, type]:
    """Every registered name and its class (a read-only view)."""
    return MappingProxyType(_CLASSES)
