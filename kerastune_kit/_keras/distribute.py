"""Which process writes: the chief-worker rule, without importing TensorFlow.

Under multi-worker training every process runs the same callbacks; only the
chief writes files (checkpoints, best models, event files) to the real path.
The rule follows TensorFlow's multi-worker guide: the task of type
``"chief"``, or worker 0 when the cluster has no chief; a process without
``TF_CONFIG`` is alone and so is the chief.
"""

from __future__ import annotations

import json
import os


def task() -> tuple[str | None, int]:
    """``(task_type, task_index)`` from ``TF_CONFIG``, ``(None, 0)`` if unset."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    info = config.get("task") or {}
    return info.get("type"), int(info.get("index", 0))


def num_workers() -> int:
    """Processes in the cluster named by ``TF_CONFIG`` (1 without it)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = config.get("cluster") or {}
    return max(1, sum(len(cluster.get(k, [])) for k in ("chief", "worker")))


def is_chief() -> bool:
    """Whether this process is the one that writes."""
    task_type, index = task()
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    has_chief = bool((config.get("cluster") or {}).get("chief"))
    return task_type == "worker" and index == 0 and not has_chief


def worker_path(path: str) -> str:
    """The path this process writes to: the real one on the chief, a
    throw-away folder beside it on the other workers."""
    if is_chief():
        return path
    task_type, index = task()
    parent = os.path.dirname(os.path.abspath(path))
    return os.path.join(parent, f".worker_tmp_{task_type}_{index}", os.path.basename(path))


def remove_worker_copy(path: str) -> None:
    """Removes a non-chief's throw-away copy (a file or a folder) made at
    :func:`worker_path`, and the throw-away folder once nothing else of this
    worker lives there: the best model and the backups of one worker share
    that folder, so neither may remove it for the other."""
    import shutil

    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass
