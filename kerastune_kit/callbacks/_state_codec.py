"""One codec for what the kit's callbacks must carry across a restart.

Both back-ends use it: :class:`~kerastune_kit.callbacks.BackupAndRestore`
(files, for ``model.fit``) and the Trainer's ``backup_dir``
(``tf.train.Checkpoint``, for collectives). What a backup holds besides the
model's and optimizer's variables:

* each kit callback's :meth:`~KitCallback.get_state` (JSON) and
  :meth:`~KitCallback.get_arrays` (NumPy arrays, e.g. EarlyStopping's
  in-memory best weights), keyed by :attr:`~KitCallback.state_key` (class
  name plus identifying arguments, ``"EarlyStopping(monitor='val_loss')"``;
  ``#2``, ``#3`` only to tell apart two callbacks with the same key);
* the LR control: the optimizer's ControlledSchedule ``factor``,
  ``position``, ``anchor_step`` and ``rate`` (a cut of CurveBasedLR or
  DivergenceGuard lives there and nowhere else);
* a fingerprint of what it belongs to: the model's variables (short names,
  shapes, dtypes, in order), the optimizer's class, the callbacks' keys.

One policy on mismatch: a backup made with other kit callbacks than the fit
call has is refused with a ``ValueError`` naming both lists.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np

from kerastune_kit._model_state import optimizer as _optimizer
from kerastune_kit.callbacks._base import KitCallback

FORMAT = 2


def keyed(callbacks) -> dict[str, KitCallback]:
    """``{state_key: callback}`` for the kit callbacks among ``callbacks``."""
    out: dict[str, KitCallback] = {}
    for callback in callbacks:
        if not isinstance(callback, KitCallback):
            continue
        key = callback.state_key
        n = 1
        while (key if n == 1 else f"{key}#{n}") in out:
            n += 1
        out[key if n == 1 else f"{key}#{n}"] = callback
    return out


def encode(model, callbacks) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """The JSON record and the arrays of ``callbacks`` and the LR control."""
    states, arrays = {}, {}
    for key, callback in keyed(callbacks).items():
        states[key] = callback.get_state()
        saved = callback.get_arrays()
        if saved:
            arrays[key] = {name: np.asarray(value) for name, value in saved.items()}
    record = {"format": FORMAT, "callbacks": states, "lr_control": lr_control(model)}
    return record, arrays


def check_format(record: dict, where: str) -> None:
    """Raises ``ValueError`` for a record of another format than this kit's."""
    if record.get("format") != FORMAT:
        raise ValueError(
            f"The backup in {where!r} has format {record.get('format')!r}; this kit reads "
            f"format {FORMAT}. Use another backup folder to start afresh.")


def decode(model, callbacks, record: dict, arrays: dict, *, where: str) -> None:
    """Puts a record and its arrays back into ``callbacks`` and the optimizer.

    Raises ``ValueError`` when the saved callbacks are not this call's. The
    stores check the record's format (:func:`check_format`) before they
    load anything.
    """
    given = keyed(callbacks)
    saved = record.get("callbacks", {})
    if set(saved) != set(given):
        raise ValueError(
            f"The backup in {where!r} was made with the kit callbacks {sorted(saved)} but "
            f"this fit call has {sorted(given)}; build the same callbacks to resume, or "
            "use another backup folder to start afresh.")
    for key, callback in given.items():
        callback.set_state(saved[key])
        if key in arrays:
            callback.set_arrays(arrays[key])
    controls = record.get("lr_control")
    if controls:
        _optimizer.controlled_schedule(model).set_controls(**controls)


def lr_control(model) -> dict | None:
    """The ControlledSchedule's controls, or None when the kit has none installed."""
    if getattr(model, "optimizer", None) is None or not _optimizer.has_controlled_schedule(
            model):
        return None
    _optimizer.host_sync(model)
    return _optimizer.rate_object(model.optimizer).controls()


def fingerprint(model, callbacks) -> dict:
    """What a backup belongs to: model variables, optimizer class, callback keys."""
    # Short names (``kernel``), not paths: a model built twice in one process
    # has other paths (``dense_1/kernel``) but is the same model.
    variables = [(v.name.split("/")[-1], list(v.shape), str(v.dtype)) for v in model.variables]
    digest = hashlib.sha256(json.dumps(variables).encode()).hexdigest()[:16]
    optimizer = getattr(model, "optimizer", None)
    return {"variables": digest, "variable_count": len(variables),
            "optimizer": None if optimizer is None else type(
                _optimizer.base_optimizer(optimizer)).__name__,
            "callbacks": sorted(keyed(callbacks))}


def differences(saved: dict, now: dict) -> list[str]:
    """What differs between two fingerprints, in words."""
    found = []
    if saved.get("variables") != now.get("variables"):
        found.append(f"the model's variables differ ({saved.get('variable_count')} saved, "
                     f"{now.get('variable_count')} now, or other shapes or names)")
    if saved.get("optimizer") != now.get("optimizer"):
        found.append(f"the optimizer was {saved.get('optimizer')}, now "
                     f"{now.get('optimizer')}")
    if saved.get("callbacks") != now.get("callbacks"):
        found.append(f"the kit callbacks were {saved.get('callbacks')}, now "
                     f"{now.get('callbacks')}")
    return found


def arrays_to_bytes(arrays: dict[str, dict[str, np.ndarray]]) -> bytes:
    """All callbacks' arrays in one ``.npz`` (names ``<key>|<array>``)."""
    flat = {f"{key}|{name}": value for key, group in arrays.items()
            for name, value in group.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    return buffer.getvalue()


def arrays_from_bytes(data: bytes) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    if not data:
        return out
    with np.load(io.BytesIO(data)) as loaded:
        for flat in loaded.files:
            key, name = flat.split("|", 1)
            out.setdefault(key, {})[name] = loaded[flat]
    return out
