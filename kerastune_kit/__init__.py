"""kerastune_kit: the training-tuning toolkit for Keras 3 on TensorFlow.

Submodules: ``schedules``, ``callbacks``, ``regularizers``, ``tuning``
(``search``, ``find_lr``), ``training``, ``plotting``, ``recipes``
(``fit_budgeted``). Those that define serializable classes (the schedules,
the scheduled regularizer, the optimizer's rate handle) are imported here,
so their decorators register them with Keras and a ``.keras`` file the kit
wrote loads after ``import kerastune_kit`` alone; the others on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("callbacks", "plotting", "recipes", "regularizers", "schedules", "training",
               "tuning")
_NAMES = {
    "fit_budgeted": "kerastune_kit.recipes",
    "BudgetedResult": "kerastune_kit.recipes",
    "Trainer": "kerastune_kit.training",
    "find_lr": "kerastune_kit.tuning",
    "search": "kerastune_kit.tuning",
    "SearchResult": "kerastune_kit.tuning",
    "TimeBasedLR": "kerastune_kit.callbacks",
    "CurveBasedLR": "kerastune_kit.callbacks",
    "DivergenceGuard": "kerastune_kit.callbacks",
    "EarlyStopping": "kerastune_kit.callbacks",
    "BackupAndRestore": "kerastune_kit.callbacks",
    "Budget": "kerastune_kit.callbacks",
    "TensorBoardCurves": "kerastune_kit.callbacks",
}

__all__ = [*sorted(_NAMES), *_SUBMODULES, "__version__"]

# Registered with Keras by their decorators as they are imported.
from kerastune_kit import schedules  # noqa: E402, F401
from kerastune_kit._model_state import optimizer as _optimizer  # noqa: E402, F401
from kerastune_kit.regularizers import scheduled_regularizer as _scheduled  # noqa: E402, F401


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"kerastune_kit.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'kerastune_kit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
