"""Warmup, a long stable phase, then a short decay (WSD)."""

from __future__ import annotations

from kerastune_kit._args.validation import check_int, check_non_negative
from kerastune_kit.schedules import _pieces, _shapes
from kerastune_kit.schedules._base import PieceSchedule
from kerastune_kit.schedules._spec_names import register


@register
class WarmupStableDecay(PieceSchedule):
    """Warmup-stable-decay: the schedule of many recent large training runs.

    Three phases over ``total_steps``: a linear warmup from
    ``initial_learning_rate`` to ``peak_learning_rate`` over ``warmup_steps``;
    the peak held; and a decay to ``final_learning_rate`` over the last
    ``decay_steps`` with the chosen shape. That is a :class:`Sequence` of
    ``Anneal(initial, peak, warmup_steps)``, ``Constant(peak)`` and
    ``Anneal(peak, final, decay_steps, decay_shape)``, without the phases of
    length 0 (with ``decay_steps=0`` the rate falls to the final rate in the
    one step after ``total_steps``).

    Args:
        peak_learning_rate: the stable rate, ``>= 0``.
        total_steps: length of the run, ``>= 1``.
        warmup_steps: steps of warmup, ``>= 0``. Defaults to 0.
        decay_steps: steps of the final decay, ``>= 0``; ``None`` (default)
            takes 20% of ``total_steps``.
        initial_learning_rate: the rate at step 0. Defaults to 0.
        final_learning_rate: the rate at the end. Defaults to 0.
        decay_shape: ``"linear"`` (default), ``"cosine"`` or ``"1-sqrt"``.

    Example:

    >>> from kerastune_kit.schedules import WarmupStableDecay
    >>> s = WarmupStableDecay(1.0, total_steps=100, warmup_steps=10, decay_steps=20)
    >>> [round(float(s(t)), 6) for t in (5, 50, 90, 100)]
    [0.5, 1.0, 0.5, 0.0]
    """

    def __init__(self, peak_learning_rate: float, total_steps: int,
                 warmup_steps: int = 0, decay_steps: int | None = None,
                 initial_learning_rate: float = 0.0,
                 final_learning_rate: float = 0.0, decay_shape: str = "linear"):
        self.peak_learning_rate = float(
            check_non_negative("peak_learning_rate", peak_learning_rate))
        self.total_steps = check_int("total_steps", total_steps, minimum=1)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        if decay_steps is None:
            decay_steps = int(round(0.2 * self.total_steps))
        self.decay_steps = check_int("decay_steps", decay_steps, minimum=0)
        if self.warmup_steps + self.decay_steps > self.total_steps:
            raise ValueError(
                f"`warmup_steps` + `decay_steps` must be <= `total_steps`; got "
                f"warmup_steps={self.warmup_steps}, decay_steps={self.decay_steps}, "
                f"total_steps={self.total_steps}."
            )
        self.initial_learning_rate = float(
            check_non_negative("initial_learning_rate", initial_learning_rate))
        self.final_learning_rate = float(
            check_non_negative("final_learning_rate", final_learning_rate))
        self.decay_shape = _shapes.check_shape("decay_shape", decay_shape, default="linear",
                                               excluded=("exponential",))

    def _compose(self) -> _pieces.Piece:
        peak = self.peak_learning_rate
        decay_start = self.total_steps - self.decay_steps
        phases = [  # (start, piece, length)
            (0, _pieces.anneal(self.initial_learning_rate, peak, self.warmup_steps, "linear"),
             self.warmup_steps),
            (self.warmup_steps, _pieces.constant(peak), decay_start - self.warmup_steps),
            # One step of decay when there are none: what the rate always did after the end.
            (decay_start, _pieces.anneal(peak, self.final_learning_rate,
                                         max(self.decay_steps, 1), self.decay_shape), 1),
        ]
        kept = [(start, piece) for start, piece, length in phases if length > 0]
        return _pieces.join([piece for _, piece in kept], [start for start, _ in kept[1:]])

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "initial_learning_rate": self.initial_learning_rate,
            "final_learning_rate": self.final_learning_rate,
            "decay_shape": self.decay_shape,
        }
