"""Atomic file writes and early path checks.

A file that a crash must never corrupt (the best model, a backup pointer) is
written to a temporary file in the same folder, flushed to disk, and moved
over the real name with ``os.replace``, which POSIX and Windows make atomic
within one file system. A kill at any moment therefore leaves either the old
file or the new one, never a torn one; at worst a temporary file stays
behind, which :func:`remove_stale_temps` clears on the next run.

The checks run before training, so a bad path fails in the first second
instead of after the first improvement hours later.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from typing import Any

# Compound suffixes Keras insists on; a temporary name keeps them so that
# Keras's own writers accept it.
_COMPOUND_SUFFIXES = (".weights.h5", ".weights.json")
_TEMP_MARK = ".tmp-"


def split_suffix(path: str) -> tuple[str, str]:
    """``("folder/best", ".weights.h5")`` for ``"folder/best.weights.h5"``."""
    for suffix in _COMPOUND_SUFFIXES:
        if path.endswith(suffix) and len(os.path.basename(path)) > len(suffix):
            return path[: -len(suffix)], suffix
    return os.path.splitext(path)


def check_suffix(name: str, path: Any, suffixes: Iterable[str]) -> str:
    """Checks that ``path`` is a non-empty path ending in one of ``suffixes``."""
    suffixes = tuple(suffixes)
    accepted = " or ".join(repr(s) for s in suffixes)
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"`{name}` must be a file path ending in {accepted}, got {path!r}.")
    path = os.fspath(path)
    base = os.path.basename(path)
    if not any(base.endswith(s) and len(base) > len(s) for s in suffixes):
        raise ValueError(f"`{name}` must end in {accepted}, got {path!r}.")
    return path


def check_writable_folder(name: str, folder: str) -> str:
    """Makes ``folder`` if needed and proves it writable by writing a file.

    Raises ``ValueError`` naming the argument, the folder and the reason.
    """
    folder = os.path.abspath(folder or ".")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"`{name}`: cannot create the folder {folder!r}: {error.strerror or error}."
        ) from None
    if not os.path.isdir(folder):
        raise ValueError(f"`{name}`: {folder!r} exists and is not a folder.")
    probe = os.path.join(folder, f".write-test{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(
            f"`{name}`: the folder {folder!r} is not writable: {error.strerror or error}."
        ) from None
    return folder


def process_start(pid: int) -> str:
    """When process ``pid`` started, as a token ("0" where it cannot be read).

    A pid is reused (a restarted container gets the same one), so a temporary
    file is recognised by its writer's pid AND start; Linux tells the start
    in ``/proc/<pid>/stat`` (clock ticks since boot).
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return "0"


_START = process_start(os.getpid())


def temp_path(path: str) -> str:
    """A fresh temporary name beside ``path`` with the same suffix.

    ``best.keras`` gives ``best.tmp-<pid>-<start>-<random>.keras``: the same
    folder (so ``os.replace`` stays on one file system), a suffix Keras
    accepts, and the writer's identity (see :func:`stale_temps`).
    """
    stem, suffix = split_suffix(path)
    return f"{stem}{_TEMP_MARK}{os.getpid()}-{_START}-{secrets.token_hex(4)}{suffix}"


def writer_alive(pid: int, start: str | None) -> bool:
    """Whether the process that wrote a temporary file still runs."""
    if pid == os.getpid():
        return start is None or start == _START
    if not _pid_alive(pid):
        return False
    return start is None or start == "0" or process_start(pid) in (start, "0")


def fsync_path(path: str) -> None:
    """Flushes a file's or folder's data and metadata to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if os.path.isdir(path):  # Windows cannot open a folder; nothing to flush.
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not os.path.isdir(path):
            raise
        # Some file systems cannot fsync a folder; the rename stands anyway.
    finally:
        os.close(fd)


def replace_atomically(path: str, write: Callable[[str], Any]) -> None:
    """Writes ``path`` through ``write(temp_name)`` and an atomic rename.

    ``write`` must create the file it is given. On any error the temporary
    file is removed and ``path`` is left as it was.
    """
    temp = temp_path(path)
    try:
        write(temp)
        fsync_path(temp)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
    fsync_path(os.path.dirname(os.path.abspath(path)))


def write_json_atomically(path: str, data: Any) -> None:
    """Writes ``data`` as JSON to ``path`` atomically."""
    text = json.dumps(data, indent=1, sort_keys=True)

    def write(temp):
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)

    replace_atomically(path, write)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temps(path: str) -> list[str]:
    """Temporary files or folders of ``path`` whose writer no longer runs.

    The writer is the pid and start recorded in the name: a dead pid, or a
    live pid that started at another time (the pid was reused, even by this
    very process), means the file is left over. Names from before the start
    was recorded (``<pid>-<random>``) are judged by the pid alone.
    """
    folder = os.path.dirname(os.path.abspath(path))
    stem, suffix = split_suffix(os.path.basename(path))
    pattern = re.compile(
        re.escape(stem) + re.escape(_TEMP_MARK) + r"(\d+)-(?:(\d+)-)?[0-9a-f]+"
        + re.escape(suffix) + "$")
    found = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        match = pattern.match(name)
        if not match:
            continue
        pid, start = int(match.group(1)), match.group(2)
        legacy_own = start is None and pid == os.getpid()
        if not legacy_own and not writer_alive(pid, start):
            found.append(os.path.join(folder, name))
    return sorted(found)


def remove_path(path: str) -> bool:
    """Removes a file or a folder tree; False when a file could not be removed."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
        return True
    try:
        os.remove(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def remove_stale_temps(path: str) -> list[str]:
    """Removes what :func:`stale_temps` finds; returns the removed paths."""
    return [temp for temp in stale_temps(path) if remove_path(temp)]
