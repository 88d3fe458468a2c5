"""Pictures of a run's curves, read from its TensorBoard event files.

matplotlib is optional: it is imported only when a plot is drawn.
"""

from kerastune_kit.plotting.plot_run import plot_run

__all__ = ["plot_run"]
