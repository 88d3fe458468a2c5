"""One live run per backup folder and per best-model file.

Two runs writing the same backup folder or best-model file silently mix
their states (one resumes the other's weights). A run therefore takes an
exclusive lock on ``<path>.lock`` for as long as it trains: an OS lock
(``fcntl.flock``), released by the kernel when the process ends, even by a
SIGKILL, so a crashed run never blocks its restart. The lock file also
records who holds it, for the error the second run gets. Where ``fcntl``
is missing (Windows) the record alone is checked: a record of a process that
still runs refuses the path.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

from kerastune_kit._files.atomic import _START, writer_alive

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


# The locks this process holds, by lock file.
_HELD: dict[str, Ownership] = {}


class PathInUseError(ValueError):
    """Another live run holds the path; the message names it."""


class Ownership:
    """The lock of one path, held from :meth:`acquire` to :meth:`release`.

    Args:
        path: the folder or file the run writes.
        name: the argument it came from, for messages (``"backup_dir"``).
        folder: whether ``path`` is a folder (the lock is ``<path>/.lock``)
            or a file (``<path>.lock`` beside it).
    """

    def __init__(self, path: str, name: str, *, folder: bool):
        self.path = os.path.abspath(path)
        self.name = name
        self.lock_path = os.path.join(self.path, ".lock") if folder else self.path + ".lock"
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Takes the lock, or raises :class:`PathInUseError` naming the holder.

        A lock this process still holds through another object (a fit that
        ended with an exception, so without ``on_train_end``, then run
        again in the same notebook) is taken over: one process runs one fit
        at a time.
        """
        if self._fd is not None:
            return
        leftover = _HELD.get(self.lock_path)
        if leftover is not None and leftover is not self:
            leftover.release()
        os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
        for _ in range(10):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._take_lock(fd)
                if not _same_file(fd, self.lock_path):
                    # Its holder removed it between our open and our lock:
                    # that file is gone, take the new one.
                    os.close(fd)
                    continue
                record = {"pid": os.getpid(), "start": _START, "host": socket.gethostname(),
                          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(record).encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            _HELD[self.lock_path] = self
            return
        raise PathInUseError(f"`{self.name}` {self.path!r}: its lock keeps changing hands.")

    def _take_lock(self, fd) -> None:
        taken, record = _try_lock(fd, fcntl.LOCK_EX if fcntl is not None else None)
        if not taken:
            raise self._in_use(record)

    def release(self) -> None:
        """Lets the path go and removes the lock file (a later run that opened
        the removed file sees it is gone and takes a new one)."""
        if self._fd is None:
            return
        try:
            os.remove(self.lock_path)
        except OSError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None
        if _HELD.get(self.lock_path) is self:
            del _HELD[self.lock_path]

    def _in_use(self, record: dict | None) -> PathInUseError:
        who = "another run"
        if record:
            who = (f"the run of pid {record.get('pid')} on {record.get('host')} "
                   f"(since {record.get('since')})")
        return PathInUseError(
            f"`{self.name}` {self.path!r} is in use by {who}: two live runs must not write "
            f"one {self.name}. Give this run its own {self.name}, or wait for the other to "
            f"end (its lock is {self.lock_path!r}).")


def _same_file(fd, path: str) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def _read_record(fd) -> dict | None:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data.decode()) if data.strip() else None
    except (OSError, ValueError):
        return None


def holder(lock_path: str) -> dict | None:
    """The owner record of a live holder of ``lock_path``; None when the
    lock is free (or its file gone)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        taken, record = _try_lock(fd, fcntl.LOCK_SH if fcntl is not None else None)
        return None if taken else (record or {})
    finally:
        os.close(fd)  # and the shared lock, if we took it


@contextlib.contextmanager
def exclusive(path: str):
    """An exclusive OS lock on the file ``path`` for the block, waiting for
    it: a short critical section between processes (no record is written)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try_lock(fd, kind) -> tuple[bool, dict | None]:
    """Takes ``kind`` of flock on ``fd`` without waiting: (taken, the holder's
    record when not). Without ``fcntl`` the record decides: a live writer
    holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True, None
        except OSError:
            return False, _read_record(fd)
    record = _read_record(fd)
    if record and writer_alive(int(record.get("pid", -1)), record.get("start")):
        return False, record
    return True, None
