"""The outcome of :func:`kerastune_kit.search`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SearchResult:
    """What :func:`~kerastune_kit.search` returns: the best trial and every trial.

    Attributes:
        best_params: the parameters of the study's best complete trial.
        best_value: its monitored validation value, as logged.
        monitor: the validation metric that ranked the trials.
        best_model: the best model this search's ``directory`` holds,
            restored (its best epoch), or None if no trial completed.
        best_model_path: ``directory/best.keras``, written atomically
            whenever a trial beat it, or None if none was written.
        trials: one dict per trial of the study, oldest first: ``number``,
            ``params``, ``rung``, ``budget``, ``value``, ``seconds``,
            ``state`` and ``stop_reason``.
        study: the ``optuna.Study``.
    """

    best_params: dict
    best_value: float | None
    monitor: str
    best_model: Any
    best_model_path: str | None
    trials: tuple
    study: Any

    def summary(self) -> str:
        """The trials as a table, best first, and the best parameters."""
        done = [t for t in self.trials if t["value"] is not None]
        done.sort(key=lambda t: t["value"], reverse=self.study.direction.name == "MAXIMIZE")
        lines = [f"{'trial':>5} {'rung':>4} {'budget s':>8} {'seconds':>7} "
                 f"{self.monitor:>14} {'state':>8}  params"]
        for t in done + [t for t in self.trials if t["value"] is None]:
            value = "-" if t["value"] is None else f"{t['value']:.4f}"
            seconds = "-" if t["seconds"] is None else f"{t['seconds']:.1f}"
            params = ", ".join(f"{k}={_short(v)}" for k, v in t["params"].items())
            lines.append(f"{t['number']:>5} {t['rung']:>4} {t['budget']:>8.1f} {seconds:>7} "
                         f"{value:>14} {t['state']:>8}  {params}")
        lines.append(f"best: {self.monitor}={self.best_value} with {self.best_params}")
        return "\n".join(lines)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
