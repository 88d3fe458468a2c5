"""Where regularizers live in a model: the walk, the weight roles, selection.

Shared by ``apply``, ``remove`` and ``describe``. A *site* is one place a
regularizer can sit: a weight of a layer (the variable's ``regularizer``,
which Keras reads at loss time, plus the layer attribute that
``get_config`` and saving record) or a layer's output (its
``activity_regularizer``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import keras

from kerastune_kit._args.validation import show
from kerastune_kit._keras import private as private
from kerastune_kit._model_state.optimizer import invalidate_traces

# role -> (weight attribute, regularizer attribute) pairs, first match wins
# per weight. ``kernel=`` covers every input-side weight matrix; recurrent
# kernels have their own role, as in Keras's own layer arguments.
ROLES: dict[str, tuple[tuple[str, str], ...]] = {
    "kernel": (
        ("kernel", "kernel_regularizer"),          # Dense, EinsumDense, Conv*, RNN cells
        ("kernel", "depthwise_regularizer"),       # DepthwiseConv1D/2D
        ("depthwise_kernel", "depthwise_regularizer"),  # SeparableConv1D/2D
        ("pointwise_kernel", "pointwise_regularizer"),  # SeparableConv1D/2D
        ("embeddings", "embeddings_regularizer"),  # Embedding
    ),
    "bias": (("bias", "bias_regularizer"),),
    "recurrent": (("recurrent_kernel", "recurrent_regularizer"),),
}
ACTIVITY = "activity"


@dataclass(frozen=True)
class Site:
    layer: keras.layers.Layer
    ancestors: tuple  # the root model first, down to the layer's parent
    role: str         # "kernel", "bias", "recurrent" or "activity"
    weight: str       # the weight's attribute name, or "activity"
    attr: str         # the layer attribute holding the regularizer
    variable: Any = None

    @property
    def path(self) -> str:
        names = [a.name for a in self.ancestors[1:]] + [self.layer.name]
        return "/".join(names)

    def effective(self):
        """The regularizer Keras uses: the variable's (for a weight)."""
        if self.variable is not None:
            return self.variable.regularizer
        return getattr(self.layer, self.attr, None)

    def existing(self):
        """The regularizer in effect, else one only recorded on the layer.

        A layer attribute set by hand on a built layer is recorded (saved)
        but not in effect; it still counts as taken.
        """
        effective = self.effective()
        return effective if effective is not None else getattr(self.layer, self.attr, None)

    def set(self, regularizer) -> None:
        setattr(self.layer, self.attr, regularizer)
        if self.variable is not None:
            self.variable.regularizer = regularizer


def walk(model: keras.layers.Layer) -> list[tuple[keras.layers.Layer, tuple]]:
    """Every layer once (shared layers at their first place), with ancestors."""
    found: list[tuple[keras.layers.Layer, tuple]] = []
    seen: set[int] = set()

    def visit(layer, ancestors):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        found.append((layer, ancestors))
        for child in private.child_layers(layer):
            visit(child, ancestors + (layer,))

    visit(model, ())
    return found


def own_variables(layer) -> list:
    """The variables the layer holds itself, not through its child layers."""
    held_by_children = {id(v) for child in private.child_layers(layer) for v in child.weights}
    return [v for v in layer.weights if id(v) not in held_by_children]


def _read(layer, name):
    try:
        return getattr(layer, name, None)
    except Exception:  # Properties of unbuilt or quantized layers may raise.
        return None


def weight_sites(layer, ancestors) -> list[Site]:
    """The kernel, bias and recurrent sites of one layer's own weights."""
    own = own_variables(layer)
    sites, taken = [], set()
    for role, pairs in ROLES.items():
        for weight, attr in pairs:
            variable = _read(layer, weight)
            if not isinstance(variable, keras.Variable) or id(variable) in taken:
                continue
            if not any(v is variable for v in own) or not hasattr(layer, attr):
                continue
            taken.add(id(variable))
            sites.append(Site(layer, ancestors, role, weight, attr, variable))
    return sites


def _activity_target(layer, ancestors):
    """An RNN cell's output is per time step: the RNN layer takes the penalty."""
    index = len(ancestors) - 1
    while index >= 0 and isinstance(ancestors[index], keras.layers.StackedRNNCells):
        index -= 1
    if index >= 0 and isinstance(ancestors[index], keras.layers.RNN):
        return ancestors[index], ancestors[:index]
    return layer, ancestors


def all_sites(model) -> list[Site]:
    """Weight sites of every layer, each weighted layer's activity site after them."""
    sites, seen = [], set()
    for layer, ancestors in walk(model):
        own = weight_sites(layer, ancestors)
        sites.extend(own)
        if any(s.role == "kernel" for s in own):
            target, target_ancestors = _activity_target(layer, ancestors)
            if id(target) not in seen:
                seen.add(id(target))
                sites.append(Site(target, target_ancestors, ACTIVITY, ACTIVITY,
                                  "activity_regularizer"))
    return sites


def selector(layers: Any) -> Callable[[Site], bool]:
    """Turns ``layers=`` into a test of a site (its layer or any enclosing one)."""
    if layers is None:
        return lambda site: True
    if isinstance(layers, type) or (
            isinstance(layers, tuple) and layers and all(isinstance(c, type) for c in layers)):
        test = lambda layer: isinstance(layer, layers)
    elif isinstance(layers, str):
        try:
            pattern = re.compile(layers)
        except re.error as err:
            raise ValueError(
                f"`layers` is not a valid regular expression: {show(layers)} ({err}).") from None
        test = lambda layer: pattern.search(layer.name) is not None
    elif callable(layers):
        test = lambda layer: bool(layers(layer))
    else:
        raise ValueError(
            f"`layers` must be None, a layer class or tuple of classes, a regular "
            f"expression on layer names, or a predicate taking a layer; got {show(layers)}.")

    def select(site: Site) -> bool:
        return test(site.layer) or any(test(a) for a in site.ancestors[1:])

    return select


def carried_by_saving(site: Site, memo: dict | None = None) -> bool:
    """Whether ``.keras`` saving records the regularizer now at ``site``: every
    container above it writes its children's configs into its own (Sequential
    and functional models, wrappers, RNNs; a subclassed model rebuilds its
    layers in its constructor), and the layer's config holds it. ``memo``
    keeps the containers' answers across the sites of one model."""
    memo = {} if memo is None else memo
    if not all(_holds_children_configs(a, memo) for a in site.ancestors):
        return False
    try:
        config = site.layer.get_config()
    except Exception:  # A layer that cannot describe itself is not saved either.
        return False
    return config.get(site.attr) is not None


# Layers that write their children's configs into their own.
_SERIALIZING_LAYERS = (keras.Sequential, keras.layers.Wrapper, keras.layers.Bidirectional,
                       keras.layers.RNN, keras.layers.StackedRNNCells)


def _holds_children_configs(container, memo: dict) -> bool:
    if isinstance(container, _SERIALIZING_LAYERS):
        return True
    if not isinstance(container, keras.Model):
        return False
    if id(container) not in memo:  # functional (its config lists its layers) or subclassed
        try:
            config = container.get_config()
        except Exception:  # noqa: BLE001 - a model that cannot describe itself
            config = None
        memo[id(container)] = isinstance(config, dict) and isinstance(config.get("layers"), list)
    return memo[id(container)]


def reset_compiled_functions(model) -> None:
    """Makes every (nested) model retrace its train/test/predict functions.

    A traced function has the penalties of the moment it was traced baked
    in; ``compile`` resets these the same way. The kit's one staleness
    signal (:func:`kerastune_kit._model_state.optimizer.invalidate_traces`) also tells
    loops that cache their own traced step (the kit's ``Trainer``).
    """
    for layer, _ in walk(model):
        if isinstance(layer, keras.Model):
            invalidate_traces(layer, evaluation=True)


def format_regularizer(regularizer) -> str:
    """``L2(l2=0.001)``; ``-`` for none."""
    if regularizer is None:
        return "-"
    try:
        config = regularizer.get_config()
    except Exception:
        return repr(regularizer)
    return f"{type(regularizer).__name__}({_format_args(config)})"


def _format_args(config: dict) -> str:
    parts = []
    for key, value in config.items():
        if isinstance(value, dict) and "class_name" in value:
            inner = value.get("config") or {}
            value = f"{value['class_name']}({_format_args(inner)})"
        elif isinstance(value, float):
            value = f"{value:g}"
        else:
            value = repr(value)
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def layer_listing(sites: Iterable[Site]) -> str:
    """``dense (kernel, bias), lstm/lstm_cell (kernel, recurrent_kernel, bias)``."""
    weights: dict[str, list[str]] = {}
    for site in sites:
        if site.role != ACTIVITY:
            weights.setdefault(site.path, []).append(site.weight)
    return ", ".join(f"{path} ({', '.join(names)})" for path, names in weights.items()) or "none"
