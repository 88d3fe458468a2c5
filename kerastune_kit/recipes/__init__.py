"""Recipes: the kit's parts assembled into one call.

``fit_budgeted`` trains a compiled model for a wall-clock budget and
returns a ``BudgetedResult``.
"""

from kerastune_kit.recipes.budgeted_result import BudgetedResult
from kerastune_kit.recipes.fit_budgeted import fit_budgeted

__all__ = ["BudgetedResult", "fit_budgeted"]
