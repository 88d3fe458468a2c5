"""_distribute: which process writes, from TF_CONFIG, and where the others write."""

import json
import os

import pytest

from kerastune_kit._keras import distribute as _distribute

CLUSTER_WITH_CHIEF = {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"]}
WORKERS_ONLY = {"worker": ["host0:2222", "host1:2222"]}


def set_tf_config(monkeypatch, cluster, task_type, index=0):
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": cluster, "task": {"type": task_type, "index": index}}))


def test_without_tf_config_the_process_is_alone_and_chief(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert _distribute.task() == (None, 0)
    assert _distribute.num_workers() == 1
    assert _distribute.is_chief()
    path = str(tmp_path / "best.keras")
    assert _distribute.worker_path(path) == path


def test_an_empty_tf_config_is_no_cluster(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "")
    assert _distribute.task() == (None, 0) and _distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", "{}")
    assert _distribute.num_workers() == 1 and _distribute.is_chief()


def test_the_chief_task_writes(monkeypatch, tmp_path):
    set_tf_config(monkeypatch, CLUSTER_WITH_CHIEF, "chief")
    assert _distribute.task() == ("chief", 0)
    assert _distribute.num_workers() == 3
    assert _distribute.is_chief()
    assert _distribute.worker_path(str(tmp_path / "best.keras")) == str(tmp_path / "best.keras")


def test_worker_0_does_not_write_when_there_is_a_chief(monkeypatch, tmp_path):
    set_tf_config(monkeypatch, CLUSTER_WITH_CHIEF, "worker", 0)
    assert _distribute.task() == ("worker", 0)
    assert not _distribute.is_chief()
    assert _distribute.worker_path(str(tmp_path / "best.keras")) == str(
        tmp_path / ".worker_tmp_worker_0" / "best.keras")


def test_worker_0_writes_when_there_is_no_chief(monkeypatch, tmp_path):
    set_tf_config(monkeypatch, WORKERS_ONLY, "worker", 0)
    assert _distribute.num_workers() == 2
    assert _distribute.is_chief()
    assert _distribute.worker_path(str(tmp_path / "ckpt")) == str(tmp_path / "ckpt")


def test_worker_1_writes_beside_the_real_path(monkeypatch, tmp_path):
    set_tf_config(monkeypatch, WORKERS_ONLY, "worker", 1)
    assert _distribute.task() == ("worker", 1)
    assert not _distribute.is_chief()
    # A relative path: the throw-away folder is beside its absolute form.
    monkeypatch.chdir(tmp_path)
    assert _distribute.worker_path(os.path.join("runs", "best.keras")) == str(
        tmp_path / "runs" / ".worker_tmp_worker_1" / "best.keras")


@pytest.mark.parametrize("task_type", ["evaluator", "ps"])
def test_other_task_types_do_not_write(monkeypatch, task_type):
    set_tf_config(monkeypatch, {**WORKERS_ONLY, "ps": ["host9:2222"]}, task_type)
    assert not _distribute.is_chief()
    assert _distribute.num_workers() == 2  # chiefs and workers only


def test_a_task_without_index_is_index_0(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": WORKERS_ONLY,
                                                "task": {"type": "worker"}}))
    assert _distribute.task() == ("worker", 0) and _distribute.is_chief()


def test_a_malformed_tf_config_raises(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError):
        _distribute.is_chief()


def test_remove_worker_copy_keeps_the_folder_while_another_copy_lives_there(
        monkeypatch, tmp_path):
    set_tf_config(monkeypatch, WORKERS_ONLY, "worker", 1)
    best = _distribute.worker_path(str(tmp_path / "best.keras"))
    backup = _distribute.worker_path(str(tmp_path / "backup"))
    os.makedirs(os.path.join(backup, "inner"))
    with open(best, "w") as f:
        f.write("model")
    folder = os.path.dirname(best)
    assert folder == os.path.dirname(backup)

    _distribute.remove_worker_copy(best)
    assert not os.path.exists(best) and os.path.isdir(backup)  # the backup's folder stays
    _distribute.remove_worker_copy(backup)
    assert not os.path.exists(folder)  # the last copy takes the folder with it
    _distribute.remove_worker_copy(best)  # nothing left: nothing to do, no error
