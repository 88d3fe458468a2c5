"""_atomic: path checks, atomic writes and the temporary files a killed writer leaves."""

import json
import os
import subprocess
import sys

import pytest

from kerastune_kit._files import atomic as _atomic


@pytest.fixture(scope="module")
def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


# Paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("path, expected", [
    ("runs/best.keras", ("runs/best", ".keras")),
    ("best.weights.h5", ("best", ".weights.h5")),
    ("a/b.weights.json", ("a/b", ".weights.json")),
    ("a/.weights.h5", ("a/.weights", ".h5")),   # the name is only the suffix: not compound
    ("noext", ("noext", "")),
])
def test_split_suffix(path, expected):
    assert _atomic.split_suffix(path) == expected


def test_check_suffix(tmp_path):
    assert _atomic.check_suffix("p", tmp_path / "m.keras", [".keras"]) == str(tmp_path / "m.keras")
    assert _atomic.check_suffix("p", "w.weights.h5", (".keras", ".weights.h5")) == "w.weights.h5"
    with pytest.raises(ValueError, match=r"`p` must end in '.keras' or '.weights.h5', got "
                                         r"'m.h5'"):
        _atomic.check_suffix("p", "m.h5", (".keras", ".weights.h5"))
    with pytest.raises(ValueError, match="`p` must end in '.keras'"):
        _atomic.check_suffix("p", "dir/.keras", [".keras"])  # no name before the suffix
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match="`p` must be a file path ending in '.keras'"):
            _atomic.check_suffix("p", bad, [".keras"])


def test_check_writable_folder_makes_it_and_leaves_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "a" / "b"
    assert _atomic.check_writable_folder("log_dir", str(folder)) == str(folder)
    assert folder.is_dir() and os.listdir(folder) == []
    monkeypatch.chdir(tmp_path)
    assert _atomic.check_writable_folder("log_dir", "") == str(tmp_path)
    assert _atomic.check_writable_folder("log_dir", "rel") == str(tmp_path / "rel")


def test_check_writable_folder_errors(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"`log_dir`: cannot create the folder '.*file': "
                                         r"File exists\."):
        _atomic.check_writable_folder("log_dir", str(a_file))
    with pytest.raises(ValueError, match=r"`log_dir`: cannot create the folder '.*file/sub'"):
        _atomic.check_writable_folder("log_dir", str(a_file / "sub"))


# Writers' identity ------------------------------------------------------------------


def test_process_start(dead_pid):
    own = _atomic.process_start(os.getpid())
    assert own.isdigit() and own == _atomic._START
    assert _atomic.process_start(dead_pid) == "0"  # gone: cannot be read


def test_temp_path_is_beside_with_the_suffix_and_the_writer(tmp_path):
    path = str(tmp_path / "best.weights.h5")
    first, second = _atomic.temp_path(path), _atomic.temp_path(path)
    assert first != second
    assert os.path.dirname(first) == str(tmp_path)
    assert first.endswith(".weights.h5")
    assert f".tmp-{os.getpid()}-{_atomic._START}-" in os.path.basename(first)


def test_writer_alive(dead_pid, live_process):
    me = os.getpid()
    assert _atomic.writer_alive(me, _atomic._START)
    assert _atomic.writer_alive(me, None)
    assert not _atomic.writer_alive(me, "1")  # this pid, but another process's start
    assert not _atomic.writer_alive(dead_pid, None)
    other = live_process.pid
    assert _atomic.writer_alive(other, _atomic.process_start(other))
    assert _atomic.writer_alive(other, "0") and _atomic.writer_alive(other, None)
    assert not _atomic.writer_alive(other, "1")  # the pid was reused


# Atomic writes ----------------------------------------------------------------------


def test_fsync_path(tmp_path):
    (tmp_path / "f").write_text("x")
    _atomic.fsync_path(str(tmp_path / "f"))
    _atomic.fsync_path(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        _atomic.fsync_path(str(tmp_path / "missing"))


def test_replace_atomically_writes_through_a_temporary_name(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    seen = []

    def write(temp):
        seen.append(temp)
        assert path.read_text() == "old"  # the real file is untouched meanwhile
        with open(temp, "w") as f:
            f.write("new")

    _atomic.replace_atomically(str(path), write)
    assert path.read_text() == "new"
    assert os.path.dirname(seen[0]) == str(tmp_path) and seen[0].endswith(".txt")
    assert os.listdir(tmp_path) == ["out.txt"]


def test_replace_atomically_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def half_written(temp):
        with open(temp, "w") as f:
            f.write("ne")
        raise KeyboardInterrupt  # any exception, Ctrl-C included

    with pytest.raises(KeyboardInterrupt):
        _atomic.replace_atomically(str(path), half_written)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    with pytest.raises(FileNotFoundError):  # `write` must create the file
        _atomic.replace_atomically(str(path), lambda temp: None)
    assert path.read_text() == "old"


def test_write_json_atomically(tmp_path):
    path = tmp_path / "state.json"
    _atomic.write_json_atomically(str(path), {"b": [1, 2], "a": None})
    assert json.loads(path.read_text()) == {"a": None, "b": [1, 2]}
    assert path.read_text() == '{\n "a": null,\n "b": [\n  1,\n  2\n ]\n}'
    _atomic.write_json_atomically(str(path), [3])
    assert json.loads(path.read_text()) == [3]
    with pytest.raises(TypeError):
        _atomic.write_json_atomically(str(path), {"x": object()})
    assert json.loads(path.read_text()) == [3] and os.listdir(tmp_path) == ["state.json"]


# What killed writers leave ----------------------------------------------------------


def test_stale_temps_are_those_of_writers_that_no_longer_run(tmp_path, dead_pid):
    me, start = os.getpid(), _atomic._START
    names = {
        f"best.tmp-{dead_pid}-123-abcd.keras": True,    # its writer is gone
        f"best.tmp-{me}-1-abcd.keras": True,            # this pid, an earlier process
        f"best.tmp-{dead_pid}-abcd.keras": True,        # old form, writer gone
        f"best.tmp-{me}-{start}-abcd.keras": False,     # this very process, writing
        f"best.tmp-{me}-abcd.keras": False,             # old form, this pid: kept
        f"other.tmp-{dead_pid}-1-abcd.keras": False,    # another file's temporary
        f"best.tmp-{dead_pid}-1-abcd.h5": False,        # another suffix
        "best.keras": False,
        f"best.tmp-{dead_pid}-1-xyz.keras": False,      # not a token of ours
    }
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / f"ckpt.tmp-{dead_pid}-1-ab").mkdir()  # a folder's temporary
    path = str(tmp_path / "best.keras")
    expected = sorted(str(tmp_path / n) for n, stale in names.items() if stale)
    assert _atomic.stale_temps(path) == expected
    folder_temp = str(tmp_path / f"ckpt.tmp-{dead_pid}-1-ab")
    assert _atomic.stale_temps(str(tmp_path / "ckpt")) == [folder_temp]
    assert _atomic.stale_temps(str(tmp_path / "missing" / "best.keras")) == []

    assert _atomic.remove_stale_temps(path) == expected
    assert sorted(os.listdir(tmp_path)) == sorted(
        [n for n, stale in names.items() if not stale] + [f"ckpt.tmp-{dead_pid}-1-ab"])
    assert _atomic.remove_stale_temps(str(tmp_path / "ckpt")) == [folder_temp]


def test_remove_path(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "g").write_text("x")
    assert _atomic.remove_path(str(tmp_path / "f")) and not (tmp_path / "f").exists()
    assert _atomic.remove_path(str(tmp_path / "d")) and not (tmp_path / "d").exists()
    assert _atomic.remove_path(str(tmp_path / "missing"))  # already gone
    (tmp_path / "file").write_text("x")
    assert not _atomic.remove_path(str(tmp_path / "file" / "below"))  # cannot be removed
