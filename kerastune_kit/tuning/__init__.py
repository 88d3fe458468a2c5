"""Tuning tools: the LR range test.

``find_lr`` runs Smith's range test on a compiled model with its own train
step and leaves the model and its optimizer exactly as they were; the
returned ``LRFinderResult`` holds the curve, a suggestion and a plot.
``LRRangeTest`` is the test itself as a callback (``find_lr`` and
``fit_budgeted`` both run it). ``search`` is a budgeted hyper-parameter
search on Optuna whose trials are ``fit_budgeted`` runs.
"""

from kerastune_kit.tuning.find_lr import find_lr
from kerastune_kit.tuning.lr_finder_result import LRFinderResult
from kerastune_kit.tuning.lr_range_test import LRRangeTest
from kerastune_kit.tuning.search import search
from kerastune_kit.tuning.search_result import SearchResult

__all__ = ["LRFinderResult", "LRRangeTest", "SearchResult", "find_lr", "search"]
