"""Learning-rate schedules: pure step-to-rate maths as Keras schedules.

Keras's own schedules are re-exported unchanged; the kit adds what Keras
lacks, and combinators (``Warmup``, ``Sequence``) that work on ANY schedule.
``Anneal`` is the interpolation piece: the kit's named schedules
(``LinearDecay``, ``OneCycle``, ``WarmupStableDecay``) are chains of it.
"""

from keras.optimizers.schedules import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    LearningRateSchedule,
    PiecewiseConstantDecay,
    PolynomialDecay,
)

from kerastune_kit.schedules._base import KitSchedule, schedule_length
from kerastune_kit.schedules.anneal import Anneal
from kerastune_kit.schedules.constant import Constant
from kerastune_kit.schedules.controlled import ControlledSchedule
from kerastune_kit.schedules.linear_decay import LinearDecay
from kerastune_kit.schedules.lookup import get
from kerastune_kit.schedules.one_cycle import OneCycle
from kerastune_kit.schedules.scaled import Scaled
from kerastune_kit.schedules.sequence import Sequence
from kerastune_kit.schedules.step_decay import StepDecay
from kerastune_kit.schedules.warmup import Warmup
from kerastune_kit.schedules.warmup_stable_decay import WarmupStableDecay

__all__ = [
    "Anneal",
    "Constant",
    "ControlledSchedule",
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "KitSchedule",
    "LearningRateSchedule",
    "LinearDecay",
    "OneCycle",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "Scaled",
    "Sequence",
    "StepDecay",
    "Warmup",
    "WarmupStableDecay",
    "get",
    "schedule_length",
]
