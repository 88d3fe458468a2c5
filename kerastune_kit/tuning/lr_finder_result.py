"""The outcome of an LR range test: the curve and a suggested rate."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kerastune_kit._args.validation import check_choice

SUGGESTIONS = ("valley", "steepest", "minimum")


@dataclass(frozen=True, eq=False)
class LRFinderResult:
    """The loss-versus-learning-rate curve of an LR range test, and a suggested rate.

    ``lrs[k]`` is the rate of step ``k`` and ``losses[k]`` the smoothed
    (bias-corrected EMA) loss after it. ``suggestion`` is what
    :meth:`suggest` gives for ``method``; other methods can be asked for
    afterwards without rerunning the test.

    Args:
        lrs: the rate of each step.
        losses: the smoothed loss of each step.
        raw_losses: each step's unsmoothed loss. Defaults to None (``losses``).
        method: ``"valley"``, ``"steepest"`` or ``"minimum"``. Defaults to
            ``"valley"``.
        stopped_early: whether the test stopped before its last step, the
            loss diverging. Defaults to False.

    Example:

    >>> import numpy as np
    >>> from kerastune_kit.tuning import LRFinderResult
    >>> lrs = np.logspace(-4, 0, 9)
    >>> r = LRFinderResult(lrs, np.array([5., 5., 4., 3., 2., 1., 0.8, 2., 9.]))
    >>> float(r.suggest("minimum")) == float(lrs[6] / 10)
    True
    """

    lrs: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray | None = None
    method: str = "valley"
    stopped_early: bool = False
    suggestion: float | None = field(init=False)

    def __post_init__(self):
        lrs = np.asarray(self.lrs, dtype=np.float64)
        losses = np.asarray(self.losses, dtype=np.float64)
        if lrs.shape != losses.shape or lrs.ndim != 1:
            raise ValueError(
                f"`lrs` and `losses` must be 1-D of the same length, got shapes "
                f"{lrs.shape} and {losses.shape}.")
        raw = losses if self.raw_losses is None else np.asarray(self.raw_losses, np.float64)
        check_choice("method", self.method, SUGGESTIONS)
        object.__setattr__(self, "lrs", lrs)
        object.__setattr__(self, "losses", losses)
        object.__setattr__(self, "raw_losses", raw)
        object.__setattr__(self, "suggestion", self.suggest(self.method))

    def suggest(self, method: str = "valley") -> float | None:
        """The suggested rate by ``method``; ``None`` if no loss is finite.

        ``"valley"``: two thirds of the way down the longest decreasing
        subsequence of the loss; ``"steepest"``: the steepest fall against
        ``log(lr)``, the ends skipped; ``"minimum"``: the rate at the lowest
        loss over 10. Non-finite points are ignored; the tested range clips it.
        """
        check_choice("method", method, SUGGESTIONS)
        finite = np.flatnonzero(np.isfinite(self.losses) & np.isfinite(self.lrs)
                                & (self.lrs > 0))
        if finite.size == 0:
            return None
        lrs, losses = self.lrs[finite], self.losses[finite]
        if method == "valley":
            lr = lrs[_valley_index(losses)]
        elif method == "steepest" and finite.size >= 3:
            lr = lrs[_steepest_index(lrs, losses)]
        else:  # "minimum", and "steepest" with too few points to differentiate.
            lr = lrs[int(np.argmin(losses))] / 10.0
        return float(np.clip(lr, self.lrs[0], self.lrs[-1]))

    def plot(self, path: str | None = None, ax=None):
        """Plots loss against rate (log scale) and marks the suggestion.

        Needs matplotlib (``pip install matplotlib``). With ``path`` the
        figure is written there as a PNG without touching pyplot's global
        state; otherwise it is drawn with pyplot (so notebooks show it), or
        on ``ax`` when given. Returns ``(figure, axes)``.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as err:
            raise ImportError(
                "LRFinderResult.plot needs matplotlib, an optional dependency: "
                "pip install matplotlib"
            ) from err
        if ax is not None:
            fig = ax.figure
        elif path is not None:
            fig = Figure(figsize=(6, 4))
            ax = fig.add_subplot()
        else:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses, label="smoothed loss")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        finite = self.losses[np.isfinite(self.losses)]
        if finite.size:
            # The divergence at the end would squash the interesting part.
            low, high = float(finite.min()), float(np.percentile(finite, 95))
            pad = 0.05 * max(high - low, abs(high) * 1e-3, 1e-12)
            ax.set_ylim(low - pad, high + pad)
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="tab:red", linestyle="--",
                       label=f"{self.method}: {self.suggestion:.2e}")
        ax.legend()
        if path is not None:
            fig.savefig(path, format="png", dpi=100)
        return fig, ax


def _valley_index(losses: np.ndarray) -> int:
    """Index two thirds down the longest decreasing subsequence."""
    n = losses.size
    length = np.ones(n, dtype=int)
    previous = np.full(n, -1)
    for i in range(1, n):
        higher_before = np.flatnonzero(losses[:i] > losses[i])
        if higher_before.size:
            j = higher_before[np.argmax(length[higher_before])]
            length[i], previous[i] = length[j] + 1, j
    end = int(np.argmax(length))
    start = end
    while previous[start] >= 0:
        start = previous[start]
    return start + int(round(2.0 * (end - start) / 3.0))


def _steepest_index(lrs: np.ndarray, losses: np.ndarray) -> int:
    """Index of the most negative d loss / d log(lr), ends excluded.

    The first tenth and the last twentieth of the points (at least one each,
    fastai v1's ``skip_start=10, skip_end=5`` of 100 steps) are skipped: the
    bias-corrected EMA still averages only a few batches at the start, and
    the end is where the loss blows up.
    """
    n = losses.size
    first, last = max(1, n // 10), n - max(1, n // 20)
    if last <= first:
        first, last = 1, n - 1
    gradient = np.gradient(losses, np.log(lrs))
    return first + int(np.argmin(gradient[first:last]))
