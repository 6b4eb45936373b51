"""process.py reads a process's start time and state from /proc on Linux instead of
importing psutil; the values must be psutil's exactly, or a VMM recorded by one path would
look dead (a reused pid) to the other."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from vmkit import process

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_start_time_is_psutils() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for pid in (os.getpid(), child.pid):
            ref = process.identify(pid)
            assert ref.create_time == psutil.Process(pid).create_time()
            assert ref.alive()
        assert not process.ProcessRef(child.pid, ref.create_time - 1.0).alive()  # reused pid
    finally:
        child.kill()
        child.wait()


def test_a_zombie_and_a_missing_pid_are_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ref = process.identify(child.pid)
    deadline = time.monotonic() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not ref.alive()  # exited, not reaped yet
    child.wait()
    assert not ref.alive()
    with pytest.raises(ProcessLookupError):
        process.identify(child.pid)
