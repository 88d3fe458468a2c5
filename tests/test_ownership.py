"""The lock records behind backup folders and search folders: who holds a
path, read by another process, with and without ``fcntl``."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kerastune_kit._files import ownership as _ownership

_HOLD = """
import sys, time
from kerastune_kit._files.ownership import Ownership
Ownership(sys.argv[1], "directory", folder=False).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_holder_names_a_live_process_and_forgets_it_once_killed(tmp_path):
    path = str(tmp_path / "worker")
    lock = path + ".lock"
    assert _ownership.holder(lock) is None  # no file: nobody holds it
    process = subprocess.Popen([sys.executable, "-c", _HOLD, path], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        record = _ownership.holder(lock)
        assert record["pid"] == process.pid
        assert record["host"] == json.loads(open(lock).read())["host"]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert _ownership.holder(lock) is None  # the kernel released it; the file stays


def test_without_fcntl_the_record_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(_ownership, "fcntl", None)  # as on Windows
    lock = str(tmp_path / "worker.lock")
    with open(lock, "w") as f:
        json.dump({"pid": os.getpid(), "start": None, "host": "here"}, f)
    assert _ownership.holder(lock)["pid"] == os.getpid()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(lock, "w") as f:
        json.dump({"pid": dead.pid, "start": None, "host": "here"}, f)
    assert _ownership.holder(lock) is None


@pytest.mark.slow
def test_exclusive_makes_a_second_process_wait(tmp_path):
    path = str(tmp_path / "section.lock")
    waiter = ("import sys, time\nfrom kerastune_kit._files.ownership import exclusive\n"
              "with exclusive(sys.argv[1]):\n    print(time.monotonic(), flush=True)\n")
    with _ownership.exclusive(path):
        process = subprocess.Popen([sys.executable, "-c", waiter, path],
                                   stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert process.poll() is None  # still waiting for the lock
        released = time.monotonic()
    entered = float(process.stdout.readline())
    process.wait()
    assert entered >= released
