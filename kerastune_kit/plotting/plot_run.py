"""A run's curves as one picture, for people who would rather look than start a server."""

from __future__ import annotations

import os

import numpy as np

from kerastune_kit.plotting._events import (
    RUN_FOLDERS,
    RunData,
    best_epoch_marker,
    parse_event_lines,
    read_run,
    run_event_files,
)

# Epoch tags that are not metrics: the LR gets its own panel, the others are
# bookkeeping.
_NOT_METRICS = ("learning_rate", "steps_per_second", "iterations")
_MARKERS = {  # kind: (colour, line style, line width, legend label)
    "lr_cut": ("tab:orange", "--", 1.2, "LR cut"),
    "rollback": ("tab:red", ":", 1.5, "rollback"),
    # Wide and pale, so a stop at the same epoch stays visible on top.
    "best": ("tab:green", "-", 4.0, "best epoch"),
    "stop": ("black", "-.", 1.2, "stop"),
}


def plot_run(log_dir, path="curves.png", title: str | None = None) -> str:
    """Draws loss, metrics and learning rate of a run, with the kit's decisions marked.

    Reads the ``train`` and ``validation`` event files that
    :class:`~kerastune_kit.callbacks.TensorBoardCurves` (or Keras's
    ``TensorBoard`` callback) writes under ``log_dir``. One panel per metric
    shows training and validation against completed epochs (the first
    epoch at 1, as Keras's progress bar counts); the last panel shows the
    learning rate on a log axis, per step when the run logged it
    (``lr_every_steps``), else per epoch. Vertical lines mark the LR cuts,
    rollbacks, the best epoch and the stop. The figure is drawn off-screen,
    so it needs no display and leaves pyplot alone.

    Args:
        log_dir: the folder given to ``TensorBoardCurves``, holding one run
            (a fit continuing its epochs with ``initial_epoch`` is the same
            run).
        path: the image file to write; its extension picks the format
            (``.png``, ``.svg``, ``.pdf``, ...). Its folder is created.
            Defaults to ``"curves.png"``.
        title: the figure title. Defaults to None (the name of ``log_dir``).

    Returns:
        ``path``, as a string.

    Raises:
        ValueError: for a folder into which two runs wrote (its curves go
            back to an epoch they already had), or one without epoch curves.
        ImportError: without matplotlib, an optional dependency.

    Example:

    ```python
    from kerastune_kit.callbacks import TensorBoardCurves
    from kerastune_kit.plotting import plot_run
    model.fit(x, y, validation_data=(xv, yv), epochs=5,
              callbacks=[TensorBoardCurves("runs/demo")])
    plot_run("runs/demo", "runs/demo/curves.png")
    ```
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        raise ImportError(
            "plot_run needs matplotlib, an optional dependency of kerastune_kit: "
            "pip install matplotlib") from err

    log_dir = os.fspath(log_dir)
    path = os.fspath(path)
    data = read_run(log_dir)
    _check_one_run(log_dir, data)
    train, val = data.scalars.get("train", {}), data.scalars.get("validation", {})
    metrics = _metric_names(train, val)
    if not metrics:
        raise ValueError(
            f"`log_dir` {log_dir!r} has no epoch curves: expected 'train' and/or "
            "'validation' runs with 'epoch_*' scalars, as TensorBoardCurves or "
            f"keras.callbacks.TensorBoard write them; found runs {sorted(data.scalars)}.")

    lr_steps = train.get("learning_rate", [])
    step_to_x = _step_axis(train.get("epoch_iterations", []))
    lr_epochs = train.get("epoch_learning_rate", [])
    has_lr = bool(lr_epochs) or (bool(lr_steps) and step_to_x is not None)
    panels = len(metrics) + int(has_lr)

    fig = Figure(figsize=(9, 2.6 * panels + 0.9), layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, metrics):
        for points, label, style in ((train.get(f"epoch_{name}", []), "train", "-"),
                                     (val.get(f"epoch_{name}", []), "validation", "--")):
            if points:
                steps, values = zip(*points)
                ax.plot(np.add(steps, 1), values, style, marker="o", markersize=3,
                        label=label)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")

    markers = _markers(data)
    if has_lr:
        ax = axes[-1]
        if lr_steps and step_to_x is not None:
            steps, values = zip(*lr_steps)
            ax.plot(step_to_x(np.asarray(steps, float)), values, "-", linewidth=1,
                    color="tab:purple", label="per step")
        if lr_epochs:
            steps, values = zip(*lr_epochs)
            ax.plot(np.add(steps, 1), values, "o", markersize=3, color="tab:blue",
                    label="epoch end")
        cuts = markers.get("lr_cut", [])
        if cuts:
            ax.plot([x for x, _, _ in cuts], [v for _, v, _ in cuts], "v", markersize=7,
                    color=_MARKERS["lr_cut"][0], label="new LR after cut")
        positive = [v for _, v in lr_steps + lr_epochs if v > 0]
        if positive:
            ax.set_yscale("log", nonpositive="mask")
        ax.set_ylabel("learning rate")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best", fontsize="small")

    handles = []
    for kind, points in markers.items():
        colour, style, width, label = _MARKERS.get(kind, ("tab:gray", ":", 1.2, kind))
        alpha = 0.35 if width > 2 else 0.85
        for ax in axes:
            for x, _, _ in points:
                ax.axvline(x, color=colour, linestyle=style, linewidth=width, alpha=alpha,
                           zorder=1 if width > 2 else 2)
        detail = ", ".join(sorted({d for _, _, d in points if d}))
        handles.append(Line2D([], [], color=colour, linestyle=style, linewidth=width,
                              alpha=alpha, label=f"{label}: {detail}" if detail else label))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4),
                   fontsize="small")
    axes[-1].set_xlabel("epochs completed")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title if title is not None else os.path.basename(os.path.abspath(log_dir)))

    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as err:
        raise ValueError(f"`path` {path!r} cannot be written: {err.strerror or err}.") from None
    return path


def _check_one_run(log_dir: str, data: RunData) -> None:
    """Refuses a folder whose train or validation curves hold two runs."""
    for run in RUN_FOLDERS:
        rewinds = data.rewinds.get(run)
        if not rewinds:
            continue
        tag = "epoch_loss" if "epoch_loss" in rewinds else sorted(rewinds)[0]
        before, after = rewinds[tag]
        files = run_event_files(log_dir)
        raise ValueError(
            f"`log_dir` {log_dir!r} holds more than one run: its {run!r} curve {tag!r} "
            f"goes back from step {before} to step {after} (two trainings wrote into one "
            f"folder). Event files found: {files}. Pass the folder of one run instead: "
            "move each run's event files (one in train/ and one in validation/ per fit) "
            "into a folder of its own and pass that folder (TensorBoardCurves itself "
            "writes a new run to a fresh sibling folder, <log_dir>-2, ...).")


def _metric_names(train: dict, val: dict) -> list[str]:
    names = []
    for tag in list(train) + list(val):
        name = tag[len("epoch_"):]
        if tag.startswith("epoch_") and name not in _NOT_METRICS and name not in names:
            names.append(name)
    return sorted(names, key=lambda n: (n != "loss", names.index(n)))


def _step_axis(iterations: list[tuple[int, float]]):
    """Maps optimizer steps to fractional epochs from the step count at epoch ends.

    Epoch ``e`` ends at ``x = e + 1``. The start of the first logged epoch
    is taken one epoch's length before its end (an epoch's length is that
    of the next one), or step 0 with a single epoch.
    """
    points = [(float(count), epoch + 1.0) for epoch, count in iterations]
    # A rollback can move the counter back; keep an increasing map.
    kept = []
    for count, x in points:
        if not kept or count > kept[-1][0]:
            kept.append((count, x))
    if not kept:
        return None
    first_end, first_x = kept[0]
    length = kept[1][0] - first_end if len(kept) > 1 else first_end
    start = max(first_end - length, 0.0)
    counts = [start] + [c for c, _ in kept]
    xs = [first_x - 1.0] + [x for _, x in kept]
    if counts[0] >= counts[1]:
        counts, xs = counts[1:], xs[1:]
    return lambda steps: np.interp(steps, counts, xs)


def _markers(data: RunData) -> dict[str, list[tuple[float, float, str]]]:
    """``kind: [(x, value, detail)]`` from the ``kit/*`` marker scalars."""
    train = data.scalars.get("train", {})
    reasons = _reasons(data.texts.get("train", {}).get("kit/events", []))
    out: dict[str, list[tuple[float, float, str]]] = {}
    for tag, points in train.items():
        if not tag.startswith("kit/") or tag in ("kit/best", "kit/best_epoch"):
            continue
        kind = tag[len("kit/"):]
        out[kind] = [(epoch + 1.0, value, reasons.get((kind, epoch), ""))
                     for epoch, value in points]
    epoch = best_epoch_marker(train.get("kit/best_epoch") or [])
    if epoch is not None:
        out["best"] = [(epoch + 1.0, 0.0, f"epoch {epoch + 1}")]
    elif train.get("kit/best"):
        epoch = train["kit/best"][-1][0]
        out["best"] = [(epoch + 1.0, train["kit/best"][-1][1], f"epoch {epoch + 1}")]
    # Fixed legend order: cuts, rollbacks, best, stop, then anything else.
    order = list(_MARKERS)
    return dict(sorted(out.items(), key=lambda kv: (
        order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def _reasons(texts: list[tuple[int, str]]) -> dict[tuple[str, int], str]:
    """``(kind, 0-based epoch): reason`` parsed from the ``kit/events`` texts."""
    reasons = {}
    for _, text in texts:
        for kind, epoch, reason in parse_event_lines(text):
            reasons[(kind, epoch)] = reason
    return reasons
