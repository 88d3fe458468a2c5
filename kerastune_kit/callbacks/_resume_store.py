"""What the two backup stores do alike: resume from the newest intact backup
and refuse another run's.

:class:`~kerastune_kit.callbacks.BackupAndRestore` keeps numbered folders
(for ``model.fit``), the Trainer's ``backup_dir`` ``tf.train.Checkpoint``
files (for collectives); both keep the :data:`KEEP` newest, hold the state
of :mod:`~kerastune_kit.callbacks._state_codec`, and share the policy here:
a damaged newest backup is reported and the older one used, none intact is a
``ValueError`` naming each and what is wrong, and a backup of another format
or another run (fingerprint, ``run_id``) is refused before anything is
loaded unless ``allow_foreign=True``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

from kerastune_kit.callbacks import _state_codec

KEEP = 2  # backups kept: the newest and the one before it


class Damaged(Exception):
    """A backup that cannot be used (the next older one is tried); the
    message says why."""


class ForeignBackupError(ValueError):
    """A backup of another run or format: refused, no fallback."""


def check_owner(owner: str, where: str, saved: dict, now: dict, *,
                run_id: str | None = None, allow_foreign: bool | None = None) -> None:
    """Raises :class:`ForeignBackupError` unless ``saved`` (a backup's record,
    with its ``format`` and ``fingerprint``) belongs to this run.

    Args:
        owner: who reads it, for the messages (``"BackupAndRestore"``).
        where: the backup's path.
        saved: the backup's record.
        now: this run's :func:`~_state_codec.fingerprint`.
        run_id: this run's name; a backup with another one is another run's.
        allow_foreign: True resumes from another run's backup anyway (its
            format is still checked); False refuses it and says so; None:
            the reader has no such option.
    """
    try:
        _state_codec.check_format(saved, where)
    except ValueError as error:
        raise ForeignBackupError(f"{owner}: {error}") from None
    fingerprint = saved.get("fingerprint") or {}
    different = _state_codec.differences(fingerprint, now)
    if run_id is not None and fingerprint.get("run_id") != run_id:
        different.append(f"its run_id is {fingerprint.get('run_id')!r}, this run's {run_id!r}")
    if different and not allow_foreign:
        raise ForeignBackupError(
            f"{owner}: the backup {where!r} in `backup_dir` belongs to another run: "
            + "; ".join(different) + ". Use another backup_dir or delete this one"
            + (", or pass allow_foreign=True to resume from it anyway."
               if allow_foreign is False else "."))


def resume_newest(owner: str, directory: str, candidates: Iterable[str],
                  load: Callable[[str], object]):
    """Returns ``load(candidate)`` for the newest candidate that loads.

    ``load`` raises :class:`Damaged` for a backup that cannot be used: the
    next older one is tried, with a ``UserWarning`` when one loads. Other
    errors (:class:`ForeignBackupError`) pass. Returns None when there are no
    candidates; raises ``ValueError`` when none loads.
    """
    problems = []
    for candidate in candidates:
        try:
            loaded = load(candidate)
        except Damaged as damage:
            problems.append(f"{candidate}: {damage}")
            continue
        if problems:
            warnings.warn(
                f"{owner}: the newest backup is damaged (" + "; ".join(problems)
                + f"); resumed from the older {candidate!r} instead.", stacklevel=4)
        return loaded
    if problems:
        raise ValueError(
            f"{owner}: no intact backup in `backup_dir` {directory!r} to resume from: "
            + "; ".join(problems) + ". Delete the folder to start afresh.")
    return None
