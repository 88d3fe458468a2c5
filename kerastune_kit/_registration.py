"""Registers the kit's serializable classes with Keras as soon as Keras is there.

A ``.keras`` file the kit wrote names the kit's classes (schedules, the
scheduled regularizer, the optimizer's rate handle), and Keras finds them
only once they are registered, i.e. once their modules ran. ``import
kerastune_kit`` must therefore be enough to load such a file, yet it stays
light (it does not import Keras, and so TensorFlow, itself: the command line
answers ``--help`` at once). So: if Keras is already imported, the modules
are imported now; otherwise a one-shot import hook imports them right after
Keras finishes importing. When a kit package is what imports Keras (``from
kerastune_kit.schedules import ...`` as a program's first import), the
import would be circular then; the last kit package to finish its
``__init__`` registers instead.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_MODULES = ("kerastune_kit.schedules", "kerastune_kit.regularizers.scheduled_regularizer",
            "kerastune_kit._optimizer")


def register() -> None:
    """Imports every module that registers a serializable kit class."""
    for name in _MODULES:
        importlib.import_module(name)


def _kit_module_initializing(finishing: str | None) -> bool:
    """True while a kit module other than ``finishing`` (the package whose
    ``__init__`` is at its last line) is half-imported, e.g. the one that
    imported Keras: importing the others now would import it circularly."""
    return any(getattr(getattr(module, "__spec__", None), "_initializing", False)
               for name, module in list(sys.modules.items())
               if name.startswith("kerastune_kit.") and name != finishing
               and module is not None)


def register_if_ready(finishing: str | None = None) -> None:
    """Registers once Keras is imported and no kit module is half-imported.

    Called when Keras finishes importing and at the end of every kit
    package's ``__init__``: when a kit package is what imported Keras, the
    last of the kit's packages to finish registers.
    """
    if "keras" in sys.modules and not _kit_module_initializing(finishing):
        register()


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds ``keras`` as the other finders would, and registers the kit's
    classes right after the module has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps find_spec below from recursing
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            register_if_ready()

        spec.loader.exec_module = exec_then_register
        return spec


def register_when_keras_loads() -> None:
    if "keras" in sys.modules:
        register_if_ready()
    elif not any(isinstance(f, _AfterKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKeras())
