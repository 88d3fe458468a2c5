"""Which keras-tuner trial a fit belongs to, if any.

keras-tuner gives a per-trial log folder only to a callback whose class is
named ``TensorBoard`` (``Tuner._configure_tensorboard_dir``, after
``Tuner._deepcopy_callbacks`` copied every callback for the execution).
:class:`~kerastune_kit.callbacks.TensorBoardCurves` finds the trial itself:
``Tuner.run_trial(self, trial, ...)`` is on the call stack of every fit a
search runs, with the trial in its ``trial`` argument and, in keras-tuner's
own ``run_trial``, the execution's index in its loop variable
``execution``. That is keras-tuner's private layout (checked: keras-tuner
1.4.8). Where it is not found (another version, a fit outside a search),
the callback's fallback stays correct: each fit that finds its folder
already used writes to a fresh sibling folder, so trials never share one.
"""

from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass, field

CHECKED = "keras-tuner 1.4.8"


@dataclass(frozen=True)
class TunerTrial:
    """A keras-tuner trial: its id, the execution's index (None when the
    tuner's ``run_trial`` has no ``execution`` loop) and its hyperparameters
    (the ones TensorBoard's HParams dashboard takes: bool, int, finite float,
    str)."""

    trial_id: str
    execution: int | None
    hyperparameters: dict = field(default_factory=dict)


def current_trial() -> TunerTrial | None:
    """The keras-tuner trial whose fit calls this, or None.

    Looks only when keras-tuner is already imported (a search runs it), so
    a plain fit pays one dictionary lookup.
    """
    module = sys.modules.get("keras_tuner")
    tuner_class = getattr(module, "Tuner", None)
    if tuner_class is None:
        return None
    frame = inspect.currentframe().f_back
    trial = None
    while frame is not None:
        local = frame.f_locals
        candidate = local.get("trial")
        if isinstance(local.get("self"), tuner_class) and getattr(
                candidate, "trial_id", None) is not None:
            if trial is None:
                trial = candidate
            execution = local.get("execution")
            if candidate is trial and isinstance(execution, int):
                return _describe(trial, execution)
        frame = frame.f_back
    return None if trial is None else _describe(trial, None)


def _describe(trial, execution) -> TunerTrial:
    values = getattr(getattr(trial, "hyperparameters", None), "values", None) or {}
    kept = {}
    for name, value in values.items():
        if isinstance(value, (bool, int, str)) or (
                isinstance(value, float) and math.isfinite(value)):
            kept[str(name)] = value
    return TunerTrial(str(trial.trial_id), execution, kept)
