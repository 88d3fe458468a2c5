"""Why training stopped: one vocabulary for the kit's callbacks, the Trainer
and ``fit_budgeted``."""

from __future__ import annotations

STOP_REASONS = {
    "budget": "the time budget was spent",
    "patience": "the monitored value stopped improving",
    "threshold": "the monitored value reached its stopping threshold",
    "divergence": "the loss diverged",
    "nonfinite": "a loss or monitored value was NaN or infinite",
    "callback": "another callback stopped training",
    "epochs": "every epoch ran",
}


def stop_reason(callbacks, stopped: bool) -> str:
    """The reason a fit ended, as a key of :data:`STOP_REASONS`.

    The first callback whose ``stop_reason`` attribute is set (the kit's
    ``EarlyStopping``, ``DivergenceGuard`` and ``TimeBasedLR`` set one when
    they stop training) gives it; else ``"callback"`` when training was
    stopped (``model.stop_training``), ``"epochs"`` when it ran to its end.

    Args:
        callbacks: the fit's callbacks, in the order to ask them.
        stopped: whether ``model.stop_training`` was set at the end.

    Returns:
        A key of :data:`STOP_REASONS`.

    Example:

    >>> from kerastune_kit.callbacks import TimeBasedLR
    >>> stop_reason([TimeBasedLR(1e-3)], stopped=False)
    'epochs'
    """
    for callback in callbacks:
        reason = getattr(callback, "stop_reason", None)
        if reason in STOP_REASONS:
            return reason
    return "callback" if stopped else "epochs"
