"""What :func:`kerastune_kit.fit_budgeted` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kerastune_kit.callbacks.stop_reason import STOP_REASONS


@dataclass(frozen=True)
class BudgetedResult:
    """What :func:`~kerastune_kit.fit_budgeted` returns; the model holds the best weights.

    Attributes:
        history: the ``keras.callbacks.History`` of the training (not of the
            LR search); ``history.history[monitor][best_epoch]`` is ``best_value``.
        best_epoch: the 0-based epoch whose weights the model holds, or None
            if no epoch had a finite monitored value.
        best_value: the monitored value at ``best_epoch``, as logged.
        monitor: what chose the best epoch, e.g. ``"val_accuracy"``.
        stop_reason: ``"budget"``, ``"divergence"``, ``"nonfinite"`` or
            ``"callback"``, a key of ``callbacks.stop_reason.STOP_REASONS``.
        learning_rate: the peak rate and how it was chosen: ``"peak"``,
            ``"source"`` (``"optimizer"`` or ``"search"``), ``"reason"`` when
            the optimizer's rate was kept, and ``"low"``, ``"high"``,
            ``"steps"``, ``"suggested"`` when the LR search suggested a rate.
        seconds: the seconds spent on ``lr_search``, ``compile``, ``train``,
            ``validate`` and ``other``, and their ``total``.
        events: the decisions of the recipe's callbacks, oldest first.
        budget_seconds: the budget, in seconds.
        steps_per_epoch: the batches between two validations (None: a pass).
    """

    history: Any
    best_epoch: int | None
    best_value: float | None
    monitor: str
    stop_reason: str
    learning_rate: dict
    seconds: dict
    events: list = field(default_factory=list)
    budget_seconds: float | None = None
    steps_per_epoch: int | None = None

    def summary(self) -> str:
        """What the recipe decided, in a few lines."""
        s = self.seconds
        parts = ", ".join(f"{k} {s[k]:.1f}" for k in
                          ("lr_search", "compile", "train", "validate", "other") if k in s)
        rate = self.learning_rate
        why = rate.get("reason") or f"the LR search suggested {rate.get('suggested', 0):.3g}"
        epochs = len(self.history.history.get("loss", [])) if self.history else 0
        cuts = [e["epoch"] + 1 for e in self.events if e.get("kind") == "lr_cut"]
        if self.best_epoch is None:
            best = f"no epoch had a finite {self.monitor}"
        else:
            best = f"best epoch {self.best_epoch + 1}: {self.monitor}={self.best_value:.4g}"
        return "\n".join([
            f"fit_budgeted: {s.get('total', 0):.1f} s of a {self.budget_seconds:g} s budget "
            f"({parts})",
            f"  peak learning rate {rate['peak']:.3g} from the {rate['source']} ({why})",
            f"  {epochs} epochs of {self.steps_per_epoch} steps, each validated; "
            f"{len(cuts)} rate cuts" + (f" (epochs {', '.join(map(str, cuts))})" if cuts else ""),
            f"  {best}; stopped: {self.stop_reason} "
            f"({STOP_REASONS.get(self.stop_reason, '')})",
        ])
