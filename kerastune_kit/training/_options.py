"""The Trainer's loop options: a frozen dataclass checked at construction."""

from __future__ import annotations

import dataclasses

from kerastune_kit._args.validation import check_bool, check_choice, check_int, check_positive

MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
    """How the compiled loop runs; see :class:`kerastune_kit.Trainer` for each field.

    Every field is checked here, so a bad value fails when the ``Trainer``
    is built, not hours into a run.
    """

    steps_per_execution: int = 1
    jit_compile: bool = False
    clipnorm: float | None = None
    gradient_accumulation_steps: int = 1
    mixed_precision: str | None = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)
        set_("steps_per_execution",
             check_int("steps_per_execution", self.steps_per_execution, minimum=1))
        set_("jit_compile", check_bool("jit_compile", self.jit_compile))
        if self.clipnorm is not None:
            set_("clipnorm", check_positive("clipnorm", self.clipnorm))
        set_("gradient_accumulation_steps",
             check_int("gradient_accumulation_steps", self.gradient_accumulation_steps,
                       minimum=1))
        set_("mixed_precision",
             check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION))
