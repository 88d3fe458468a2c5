"""Reads a run's event files with TensorBoard's own reader; the text format
of the kit's decisions, written and read here.

Epoch numbers: TensorBoard's step axis is Keras's, the 0-based epoch index
(``keras.callbacks.TensorBoard`` writes the first epoch at step 0), and the
events' ``epoch`` fields are the index Keras passes to callbacks. Every
epoch number the kit writes for a person to read (the ``kit/events`` and
``kit/summary`` texts, the value of ``kit/best_epoch``, the terminal, the
plots) is 1-based, like Keras's progress bar and its ``Epoch 5: early
stopping``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

# The run folders TensorBoardCurves (and Keras's TensorBoard) write below a
# log folder; the log folder itself holds the hparams.
RUN_FOLDERS = ("train", "validation")


@dataclass
class RunData:
    """Scalars and texts of the runs under one log folder.

    ``scalars[run][tag]`` and ``texts[run][tag]`` are lists of
    ``(step, value)`` sorted by step; ``run`` is the folder relative to the
    log folder (``"train"``, ``"validation"``, ``"."`` for the folder itself).
    Points are taken in the order they were written (wall time). One
    training writes each epoch once and in order; a resumed one (after a
    crash, from a backup) writes again from the epoch it resumed at, so a
    rewind to a later step than the curve's first is a resume: the points
    the crashed process wrote from there on are dropped, as TensorBoard
    purges a restarted run's orphaned steps. A rewind to the curve's first
    step (or before) is a second training in the same folder:
    ``rewinds[run][tag] = (before, after)`` records it for each ``epoch_*``
    tag.
    """

    scalars: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    texts: dict[str, dict[str, list[tuple[int, str]]]] = field(default_factory=dict)
    rewinds: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)

    def scalar(self, run: str, tag: str) -> list[tuple[int, float]]:
        return self.scalars.get(run, {}).get(tag, [])


def read_run(log_dir: str) -> RunData:
    """Loads every scalar and text summary found under ``log_dir``.

    Runs are the folders that TensorBoard itself would list (those holding
    event files). Raises ``ValueError`` when ``log_dir`` holds none.
    """
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing import io_wrapper
    from tensorboard.util import tensor_util

    log_dir = os.fspath(log_dir)
    folders = sorted(io_wrapper.GetLogdirSubdirectories(log_dir))
    if not folders:
        raise ValueError(
            f"`log_dir` {log_dir!r} holds no TensorBoard event files (looked for "
            "'*tfevents*' files in it and its subfolders).")
    data = RunData()
    for folder in folders:
        run = os.path.relpath(folder, os.path.abspath(log_dir)).replace(os.sep, "/")
        acc = ea.EventAccumulator(folder, size_guidance=ea.STORE_EVERYTHING_SIZE_GUIDANCE)
        acc.Reload()
        tags = acc.Tags()
        scalars: dict[str, list[tuple[int, float]]] = {}
        texts: dict[str, list[tuple[int, str]]] = {}
        rewinds: dict[str, tuple[int, int]] = {}
        # TF1-style summaries carry `simple_value`; tf.summary (TF2) writes
        # tensors tagged with the plugin that shows them.
        for tag in tags.get(ea.SCALARS, []):
            scalars[tag] = _resumed(rewinds, tag, acc.Scalars(tag), lambda e: float(e.value))
        for tag in tags.get(ea.TENSORS, []):
            plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
            if plugin == "scalars":
                scalars[tag] = _resumed(
                    rewinds, tag, acc.Tensors(tag),
                    lambda e: float(tensor_util.make_ndarray(e.tensor_proto)))
            elif plugin == "text":
                texts[tag] = [(e.step, _text(tensor_util.make_ndarray(e.tensor_proto)))
                              for e in acc.Tensors(tag)]
        if scalars:
            data.scalars[run] = {t: _by_step(v) for t, v in scalars.items()}
        if texts:
            data.texts[run] = {t: _by_step(v) for t, v in texts.items()}
        if rewinds:
            data.rewinds[run] = rewinds
    return data


def is_event_file(name: str) -> bool:
    """An event file with summaries, as TensorBoard tells them by name.

    ``*.profile-empty`` files (written for the profiler) hold none.
    """
    base = os.path.basename(name)
    return "tfevents" in base and not base.endswith(".profile-empty")


def run_event_files(log_dir) -> list[str]:
    """The event files of ``log_dir``'s own runs: in it and in its ``train``
    and ``validation`` folders, where a TensorBoardCurves (or a Keras
    TensorBoard) run writes. Paths relative to ``log_dir`` with ``/``,
    sorted; ``[]`` when it holds none or does not exist (or cannot be read).
    Cloud paths (``gs://...``) are listed with TensorFlow's file system.
    """
    log_dir = os.fspath(log_dir)
    found = []
    for sub in ("", *RUN_FOLDERS):
        folder = _join(log_dir, sub) if sub else log_dir
        found += [f"{sub}/{name}" if sub else name
                  for name in _listdir(folder) if is_event_file(name)]
    return sorted(found)


def _join(folder: str, name: str) -> str:
    if "://" in folder:
        return folder.rstrip("/") + "/" + name
    return os.path.join(folder, name)


def _listdir(folder: str) -> list[str]:
    """The names in ``folder``; ``[]`` when it is missing or not a folder."""
    if "://" in folder:
        import tensorflow as tf

        try:
            return [name.rstrip("/") for name in tf.io.gfile.listdir(folder)]
        except Exception:  # noqa: BLE001 - any file-system error: nothing to see.
            return []
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _resumed(rewinds: dict, tag: str, events, value) -> list[tuple[int, float]]:
    """The ``(step, value)`` points of one tag, a resume's orphaned points dropped.

    In write order: by wall time, ties in the reader's order (file name,
    then position in the file). A rewind to the first step of the curve is
    recorded in ``rewinds`` (for ``epoch_*`` tags) and kept as it is.
    """
    ordered = [e for _, e in sorted(enumerate(events), key=lambda p: (p[1].wall_time, p[0]))]
    points: list[tuple[int, float]] = []
    for event in ordered:
        step = int(event.step)
        if points and step <= points[-1][0]:
            if step <= points[0][0]:
                if tag.startswith("epoch_") and tag not in rewinds:
                    rewinds[tag] = (points[-1][0], step)
            else:  # a resume: what the crashed process wrote from here on is stale
                points = [p for p in points if p[0] < step]
        points.append((step, value(event)))
    return points


def _by_step(points: list) -> list:
    # Stable: of two records at one step, the later written stays last.
    return sorted(points, key=lambda p: p[0])


def _text(array) -> str:
    values = array.ravel().tolist() if hasattr(array, "ravel") else [array]
    return "\n".join(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)


# The kit's decisions as markdown lines of the ``kit/events`` text. Written
# "- Epoch <1-based>: ..."; runs written before issue 13 have
# "- epoch <0-based>: ..." and still read.
_EVENT_LINE = re.compile(r"^- ([Ee])poch (\d+): \*\*(\w+)\*\* (\w+): ([^(\n]*)", re.M)


def event_markdown(event: dict) -> str:
    """One event as a markdown line: 1-based epochs, the other fields after."""
    extra = ", ".join(f"{k}={_shown(k, v)}" for k, v in event.items()
                      if k not in ("callback", "kind", "epoch", "reason"))
    line = (f"- Epoch {int(event.get('epoch', 0)) + 1}: **{event.get('callback')}** "
            f"{event.get('kind')}: {event.get('reason')}")
    return f"{line} ({extra})" if extra else line


def parse_event_lines(text: str) -> list[tuple[str, int, str]]:
    """``(kind, 0-based epoch, reason)`` of each event line in a ``kit/events``
    text, whichever convention wrote it."""
    found = []
    for capital, epoch, _callback, kind, reason in _EVENT_LINE.findall(text):
        index = int(epoch) - 1 if capital == "E" else int(epoch)
        found.append((kind, index, reason.strip()))
    return found


def best_epoch_marker(points: list[tuple[int, float]]) -> int | None:
    """The 0-based best epoch from the ``kit/best_epoch`` scalar's points.

    Written at step = the best epoch's index with the 1-based number as
    value; runs written before issue 13 have it at the last epoch's step
    with the 0-based index as value. The step tells which: before the
    change it was never below the value, after it always is.
    """
    if not points:
        return None
    step, value = points[-1]
    return int(value) - 1 if step < value else int(value)


def shown_value(value) -> str:
    """A field value as the texts show it."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _shown(name: str, value) -> str:
    if name.endswith("epoch") and isinstance(value, int) and not isinstance(value, bool):
        return str(value + 1)  # an epoch index, shown 1-based like every epoch
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return shown_value(value)
