"""Checks of the user's arguments and the parser of short specs (``"l2(1e-4)"``)."""
