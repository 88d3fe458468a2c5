"""The table ``describe`` returns: one row per weight (or layer output)."""

from __future__ import annotations

from typing import Any, NamedTuple

from kerastune_kit.regularizers._sites import format_regularizer


class RegularizerRow(NamedTuple):
    """One place a regularizer can sit.

    Attributes:
        layer: the layer's path from the model, ``"block/dense_1"``.
        weight: the weight's attribute name (``"kernel"``, ``"bias"``,
            ``"embeddings"``, ``"recurrent_kernel"``...), or ``"activity"``
            for the layer's output.
        regularizer: the ``keras.regularizers.Regularizer`` in effect, or
            ``None``.
    """

    layer: str
    weight: str
    regularizer: Any


class RegularizerTable(list):
    """A list of :class:`RegularizerRow` that prints as an aligned table.

    Example:

    >>> from kerastune_kit.regularizers import RegularizerRow, RegularizerTable
    >>> print(RegularizerTable([RegularizerRow("dense", "kernel", None)]))
    layer  weight  regularizer
    dense  kernel  -
    """

    def regularized(self) -> RegularizerTable:
        """The rows that carry a regularizer."""
        return RegularizerTable(row for row in self if row.regularizer is not None)

    def __str__(self) -> str:
        rows = [("layer", "weight", "regularizer")] + [
            (row.layer, row.weight, format_regularizer(row.regularizer)) for row in self]
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        return "\n".join(
            f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}" for r in rows)
