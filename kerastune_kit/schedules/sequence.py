"""Chain schedules over step ranges."""

from __future__ import annotations

from kerastune_kit._args.validation import check_increasing, show
from kerastune_kit.schedules import _pieces
from kerastune_kit.schedules._base import (
    PieceSchedule,
    as_schedule,
    deserialize_schedule,
    schedule_length,
    serialize_schedule,
)
from kerastune_kit.schedules._spec_names import register


@register
class Sequence(PieceSchedule):
    """Runs ``schedules[i]`` from ``boundaries[i-1]`` to ``boundaries[i]``.

    Each piece sees the steps since its OWN start (as optax's
    ``join_schedules``): piece ``i`` is evaluated at ``step - boundaries[i-1]``.

    Args:
        schedules: a non-empty list (or tuple) of n schedules (or numbers, or
            specs).
        boundaries: a list of n-1 strictly increasing positive step counts.

    Example:

    >>> from kerastune_kit.schedules import Sequence, Constant, LinearDecay
    >>> s = Sequence([Constant(1.0), LinearDecay(1.0, 10)], boundaries=[5])
    >>> [round(float(s(t)), 6) for t in (0, 4, 5, 10)]
    [1.0, 1.0, 1.0, 0.5]
    """

    def __init__(self, schedules, boundaries):
        if not isinstance(schedules, (list, tuple)) or not schedules:
            raise ValueError(
                f"`schedules` must be a non-empty list of schedules, got {show(schedules)}.")
        self.schedules = [as_schedule(s, name=f"schedules[{i}]")
                          for i, s in enumerate(schedules)]
        self.boundaries = check_increasing("boundaries", boundaries)
        if len(self.boundaries) != len(self.schedules) - 1:
            raise ValueError(
                f"`boundaries` must have len(schedules) - 1 = "
                f"{len(self.schedules) - 1} entries, got {self.boundaries!r}."
            )
        last = schedule_length(self.schedules[-1])
        start = self.boundaries[-1] if self.boundaries else 0
        self.total_steps = None if last is None else start + last

    def _compose(self) -> _pieces.Piece:
        return _pieces.join(self.schedules, self.boundaries)

    def get_config(self):
        return {
            "schedules": [serialize_schedule(s) for s in self.schedules],
            "boundaries": list(self.boundaries),
        }

    @classmethod
    def from_config(cls, config):
        return cls([deserialize_schedule(s) for s in config["schedules"]],
                   config["boundaries"])
