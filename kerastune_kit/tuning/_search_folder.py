"""The folder of one search: one study, any number of its workers.

Each worker holds an OS lock on ``.workers/<host>-<pid>.lock`` while it
runs (released by the kernel when the process ends, even by SIGKILL);
``search.json`` names the study. Workers of that study join; a search of
another study is refused while a worker of the first still runs, and
after that too (the folder holds its trials), except the default folder,
which is numbered instead.
"""

from __future__ import annotations

import glob
import json
import os
import socket

from kerastune_kit._files.atomic import write_json_atomically
from kerastune_kit._files.ownership import Ownership, PathInUseError, holder


def check_not_file(directory) -> None:
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise ValueError(f"`directory` must be a non-empty path, got {directory!r}.")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(
            f"`directory` {os.fspath(directory)!r} is a file; the search needs a folder for "
            "its trials' curves and best.keras.")


class SearchFolder:
    """The claim of one worker on a search folder, as a context manager."""

    def __init__(self, directory, study_name: str, *, numbered: bool = False):
        self.path = os.path.abspath(os.fspath(directory))
        self.study_name, self.numbered = study_name, numbered
        self._ownership = None

    def __enter__(self) -> SearchFolder:
        base, number = self.path, 1
        while True:
            holder = _study_of(self.path)
            if holder in (None, self.study_name):
                break
            if not self.numbered:
                raise self._refusal(holder)
            number += 1
            self.path = f"{base}-{number}"
        os.makedirs(os.path.join(self.path, ".workers"), exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}"
        self._ownership = Ownership(os.path.join(self.path, ".workers", name), "directory",
                               folder=False)
        self._ownership.acquire()
        if _study_of(self.path) is None:
            write_json_atomically(os.path.join(self.path, "search.json"),
                                  {"study": self.study_name})
        return self

    def __exit__(self, *exc) -> None:
        self._ownership.release()

    def _refusal(self, holder: str) -> ValueError:
        live = live_workers(self.path)
        if live:
            who = ", ".join(f"pid {r.get('pid')} on {r.get('host')}" for r in live)
            return PathInUseError(
                f"`directory` {self.path!r} belongs to the live search of study {holder!r} "
                f"({who}); give this search (study {self.study_name!r}) its own directory.")
        return ValueError(
            f"`directory` {self.path!r} holds the trials of study {holder!r}; give the "
            f"search of study {self.study_name!r} another directory, or remove that one.")


def _study_of(path: str) -> str | None:
    try:
        with open(os.path.join(path, "search.json"), encoding="utf-8") as f:
            return json.load(f).get("study")
    except (OSError, ValueError):
        return None


def live_workers(path: str) -> list[dict]:
    """The owner records of the workers that still hold their lock."""
    records = (holder(lock) for lock in glob.glob(os.path.join(path, ".workers", "*.lock")))
    return [record for record in records if record is not None]
