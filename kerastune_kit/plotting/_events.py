"""Reads a run's event files with TensorBoard's own reader."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class RunData:
    """Scalars and texts of the runs under one log folder.

    ``scalars[run][tag]`` and ``texts[run][tag]`` are lists of
    ``(step, value)`` sorted by step; ``run`` is the folder relative to the
    log folder (``"train"``, ``"validation"``, ``"."`` for the folder itself).
    """

    scalars: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    texts: dict[str, dict[str, list[tuple[int, str]]]] = field(default_factory=dict)

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
        # TF1-style summaries carry `simple_value`; tf.summary (TF2) writes
        # tensors tagged with the plugin that shows them.
        for tag in tags.get(ea.SCALARS, []):
            scalars[tag] = [(e.step, float(e.value)) for e in acc.Scalars(tag)]
        for tag in tags.get(ea.TENSORS, []):
            plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
            if plugin == "scalars":
                scalars[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                                for e in acc.Tensors(tag)]
            elif plugin == "text":
                texts[tag] = [(e.step, _text(tensor_util.make_ndarray(e.tensor_proto)))
                              for e in acc.Tensors(tag)]
        if scalars:
            data.scalars[run] = {t: _by_step(v) for t, v in scalars.items()}
        if texts:
            data.texts[run] = {t: _by_step(v) for t, v in texts.items()}
    return data


def _by_step(points: list) -> list:
    # Stable: of two records at one step, the later written stays last.
    return sorted(points, key=lambda p: p[0])


def _text(array) -> str:
    values = array.ravel().tolist() if hasattr(array, "ravel") else [array]
    return "\n".join(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)
