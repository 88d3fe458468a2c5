"""fit_budgeted's progress line: seconds out of the budget, not epochs."""

from __future__ import annotations

import sys

import keras


def _format(value) -> str:
    value = float(value)
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3e}"


class BudgetProgress(keras.callbacks.Callback):
    """Prints, at each epoch end, the seconds spent out of the budget, the
    epoch (1-based, as Keras's progress bar counts) and the epoch's logs as
    logged (validation values are the epoch's own, never averaged). With
    ``verbose=1`` the line is rewritten in place on a terminal; with 2 (or
    when the output is not a terminal) one line per epoch."""

    def __init__(self, budget, verbose):
        super().__init__()
        self.budget = budget
        self.in_place = verbose in (1, "auto") and sys.stdout.isatty()
        self._width = 0

    def on_epoch_end(self, epoch, logs=None):
        spent, total = self.budget.elapsed(), self.budget.seconds
        done = min(int(20 * spent / total), 20)
        bar = "=" * done + "." * (20 - done)
        values = " - ".join(f"{k}: {_format(v)}" for k, v in (logs or {}).items()
                            if isinstance(v, (int, float)) or getattr(v, "shape", None) == ())
        line = f"{spent:5.1f}/{total:g} s [{bar}] - epoch {epoch + 1} - {values}"
        if self.in_place:
            sys.stdout.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def on_train_end(self, logs=None):
        if self.in_place and self._width:
            sys.stdout.write("\n")
            sys.stdout.flush()
