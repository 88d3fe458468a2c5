"""Attach regularizers to a built model, take them off, list them."""

from __future__ import annotations

import warnings
from typing import Any

import keras

from kerastune_kit._args.validation import check_bool, show
from kerastune_kit.regularizers import _sites
from kerastune_kit.regularizers._sites import ACTIVITY, Site
from kerastune_kit.regularizers.lookup import get
from kerastune_kit.regularizers.regularizer_table import RegularizerRow, RegularizerTable


def apply(model: keras.layers.Layer, kernel: Any = None, bias: Any = None,
          activity: Any = None, *, recurrent: Any = None, layers: Any = None,
          overwrite: bool = False) -> keras.layers.Layer:
    """Attaches regularizers to a built model in place, weights untouched.

    Sets each selected weight variable's ``regularizer`` (what
    ``model.losses``, and so ``model.fit`` and the kit's ``Trainer``, add to
    the loss) and the layer attribute (what ``get_config`` and ``.keras``
    files record), then drops the model's traced functions, so the next
    ``fit`` or ``evaluate`` includes the penalty; the optimizer and its
    state are kept. (Setting ``layer.kernel_regularizer`` on a built layer
    does nothing.) Where a ``.keras`` file would not carry a regularizer (a
    subclassed model, a layer that creates its own sublayers), a
    ``UserWarning`` names the weights. Which weights each argument covers,
    the selection and saving in detail: ``docs/regularizers.md``.

    Args:
        model: a built ``keras.Model`` (or a single built layer).
        kernel: for every input-side weight matrix (kernels, depthwise and
            pointwise kernels, embeddings): anything
            :func:`~kerastune_kit.regularizers.get` accepts (``"l2(1e-4)"``,
            ``keras.regularizers.L2(1e-4)``...). Defaults to None (left as
            they are).
        bias: for the biases of those layers. Defaults to None.
        activity: for the output of each layer with a kernel. Defaults to
            None.
        recurrent: for the recurrent kernels of RNN cells. Defaults to None.
        layers: which layers: None (all), a layer class or tuple of classes,
            a regular expression searched in layer names (``"^dense$"``), or
            a predicate ``layer -> bool``; a matched layer's nested layers
            are selected too. Defaults to None.
        overwrite: replace regularizers already there. Defaults to False: a
            weight that has another one raises ``ValueError``, and nothing is
            changed.

    Returns:
        ``model``, changed in place.

    Raises:
        ValueError: for no regularizer or a bad spec (naming the argument),
            an unbuilt model, a bad ``layers`` value, a selection with no
            matching layer or no weight of a requested kind, or a refused
            overwrite.

    Example:

    ```python
    from kerastune_kit import regularizers
    model.fit(x, y, epochs=3)               # trained without penalty
    regularizers.apply(model, kernel="l2(1e-4)", layers=keras.layers.Dense)
    print(regularizers.describe(model))     # dense  kernel  L2(l2=0.0001) ...
    model.fit(x, y, epochs=3)               # the loss now includes the penalty
    ```
    """
    _check_model(model)
    overwrite = check_bool("overwrite", overwrite)
    wanted = {}
    for role, spec in (("kernel", kernel), ("bias", bias), ("recurrent", recurrent),
                       (ACTIVITY, activity)):
        try:
            regularizer = get(spec)
        except ValueError as err:
            raise ValueError(f"`{role}`: {err}") from None
        if regularizer is not None:
            wanted[role] = regularizer
    if not wanted:
        raise ValueError(
            "Nothing to apply: give at least one of `kernel`, `bias`, `activity` "
            "or `recurrent` (a regularizer spec such as 'l2(1e-4)').")

    everything = _sites.all_sites(model)
    chosen = _select(everything, layers)
    targets = []
    for role, regularizer in wanted.items():
        role_sites = [s for s in chosen if s.role == role]
        if not role_sites:
            raise ValueError(
                f"No selected layer has {_WHAT[role]} to regularize (layers={show(layers)}). "
                f"Layers with weights: {_sites.layer_listing(everything)}.")
        targets.extend((site, regularizer) for site in role_sites)

    if not overwrite:
        taken = [
            f"layer {site.path!r} weight {site.weight!r} already has "
            f"{_sites.format_regularizer(site.existing())}"
            for site, regularizer in targets
            if site.existing() is not None and site.existing() is not regularizer]
        if taken:
            raise ValueError(
                "Refusing to replace existing regularizers (nothing was changed): "
                + "; ".join(taken)
                + ". Pass overwrite=True to replace them, or remove() them first.")

    for site, regularizer in targets:
        site.set(regularizer)
        if hasattr(regularizer, "attached_to"):  # a ScheduledRegularizer
            regularizer.attached_to(model)
    _sites.reset_compiled_functions(model)

    memo: dict = {}
    lost = [f"{site.path}.{site.weight}" for site, _ in targets
            if not _sites.carried_by_saving(site, memo)]
    if lost:
        warnings.warn(
            "Regularizers attached to " + ", ".join(lost) + " are active but will not "
            "be in a .keras file of this model: it rebuilds those layers from its own "
            "code (a subclassed model or a layer that creates its sublayers). Apply "
            "them again after loading.", UserWarning, stacklevel=2)
    return model


def remove(model: keras.layers.Layer, kernel: bool = True, bias: bool = True,
           activity: bool = True, *, recurrent: bool = True,
           layers: Any = None) -> keras.layers.Layer:
    """Takes regularizers off a model in place, also those set at construction.

    Clears both the variables' ``regularizer`` and the layer attributes, so
    the penalty leaves ``model.losses`` and ``.keras`` files alike, and drops
    the traced train/test/predict functions so the next ``fit`` retraces.
    Covers the same weights and uses the same ``layers`` selection as
    :func:`apply`. Weights without a regularizer are left alone.

    Args:
        model: a built ``keras.Model`` (or a single built layer).
        kernel: clear kernel regularizers, True or False. Defaults to True.
        bias: clear bias regularizers, True or False. Defaults to True.
        activity: clear activity regularizers, True or False. Defaults to True.
        recurrent: clear recurrent-kernel regularizers, True or False.
            Defaults to True.
        layers: which layers, as in :func:`apply`. Defaults to None (all).

    Returns:
        ``model``, changed in place.

    Raises:
        ValueError: for an unbuilt model, a flag that is not True or False, a
            bad ``layers`` value or a selection with no matching layer.

    Example:

    ```python
    from kerastune_kit import regularizers
    regularizers.remove(model, bias=False, activity=False)  # kernels only
    model.losses  # no kernel penalty left
    ```
    """
    _check_model(model)
    flags = {"kernel": kernel, "bias": bias, "recurrent": recurrent, ACTIVITY: activity}
    roles = {role for role, flag in flags.items() if check_bool(role, flag)}
    for site in _select(_sites.all_sites(model), layers):
        if site.role in roles and site.existing() is not None:
            site.set(None)
    _sites.reset_compiled_functions(model)
    return model


def describe(model: keras.layers.Layer) -> RegularizerTable:
    """Lists where regularizers sit in a model, as a printable table.

    One :class:`RegularizerRow` ``(layer, weight, regularizer)`` per weight
    that :func:`apply` covers (with ``regularizer=None`` where there is
    none), one ``"activity"`` row per layer with a kernel, and a row for any
    other weight that carries a regularizer (such as a BatchNormalization
    ``gamma`` given one at construction). The regularizer shown for a weight
    is the one in effect, its variable's. ``print`` gives an aligned table;
    ``.regularized()`` keeps only the rows with a regularizer.

    Args:
        model: a built ``keras.Model`` (or a single built layer).

    Returns:
        A :class:`RegularizerTable`.

    Example:

    ```python
    from kerastune_kit import regularizers
    print(regularizers.describe(model))
    # layer    weight    regularizer
    # dense    kernel    L2(l2=0.0001)
    # dense    bias      -
    # dense    activity  -
    ```
    """
    _check_model(model)
    sites = _sites.all_sites(model)
    rows = RegularizerTable(
        RegularizerRow(site.path, site.weight, site.effective()) for site in sites)
    covered = {id(site.variable) for site in sites if site.variable is not None}
    for layer, ancestors in _sites.walk(model):
        for variable in _sites.own_variables(layer):
            if id(variable) not in covered and variable.regularizer is not None:
                path = Site(layer, ancestors, "", variable.name, "").path
                rows.append(RegularizerRow(path, variable.name, variable.regularizer))
    return rows


_WHAT = {
    "kernel": "a kernel",
    "bias": "a bias",
    "recurrent": "a recurrent kernel",
    ACTIVITY: "an output (activity regularizers go on layers with a kernel)",
}


def _check_model(model) -> None:
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a keras.Model or keras layer, got {show(model)}.")
    if not model.built:
        raise ValueError(
            f"`model` {model.name!r} is not built, so it has no weights to regularize yet: "
            "build it first (give it a keras.Input, call it on data, or call "
            "model.build(input_shape)).")


def _select(sites: list[Site], layers: Any) -> list[Site]:
    select = _sites.selector(layers)
    chosen = [site for site in sites if select(site)]
    if layers is not None and not chosen:
        raise ValueError(
            f"`layers`={show(layers)} matches no layer with weights. Layers with weights: "
            f"{_sites.layer_listing(sites)}.")
    return chosen
