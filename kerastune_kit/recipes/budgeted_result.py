"""What :func:`kerastune_kit.fit_budgeted` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BudgetedResult:
    """The outcome of a budgeted fit; the model holds the best weights.

    Attributes:
        history: the ``keras.callbacks.History`` of the training run (the
            LR search is not in it).
        best_epoch: the 0-based epoch whose weights the model holds, or None
            if no epoch had a finite monitored value.
        best_value: the monitored value at ``best_epoch``.
        monitor: what chose the best epoch, e.g. ``"val_accuracy"``.
        stop_reason: ``"budget"`` (the time was spent), ``"patience"`` (the
            validation curve had clearly turned), ``"divergence"`` (the
            divergence guard ran out of retries) or ``"epochs"``.
        learning_rate: the peak rate and how it was chosen: ``"peak"``,
            ``"source"`` (``"optimizer"``: the optimizer's own rate, with
            ``"reason"``; ``"search"``: the range test's suggestion) and,
            when a search ran, ``"low"``, ``"high"`` (its range),
            ``"steps"`` (its points) and ``"suggested"``.
        seconds: where the wall-clock time went: ``lr_search``, ``compile``,
            ``train``, ``validate``, ``other`` and ``total``.
        events: every decision the recipe's callbacks took, oldest first
            (the kit's event dicts: new bests, rate cuts when the validation
            curve turned, rollbacks, the stop).
    """

    history: Any
    best_epoch: int | None
    best_value: float | None
    monitor: str
    stop_reason: str
    learning_rate: dict
    seconds: dict
    events: list = field(default_factory=list)
