"""filewatch.Watch wakes on the event, not at the end of its timeout: a write to the file,
the file appearing, the process exiting. (Generous bounds: a wake is either prompt or the
whole 30 s timeout; these are not benchmarks.)"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vmkit.filewatch import Watch

TIMEOUT = 30.0
PROMPT = 10.0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify: Linux")


def _later(seconds: float, action) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    t.start()
    return t


def _timed_wait(watch: Watch) -> float:
    t0 = time.monotonic()
    watch.wait(TIMEOUT)
    return time.monotonic() - t0


def test_a_write_wakes_it(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    with Watch(log) as watch:
        assert watch.event_driven
        _later(0.2, lambda: log.open("ab").write(b"VMKIT_READY -\n"))
        assert _timed_wait(watch) < PROMPT


def test_the_file_appearing_wakes_it_then_its_writes_do(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    with Watch(log) as watch:
        _later(0.2, lambda: log.write_bytes(b"booting\n"))
        assert _timed_wait(watch) < PROMPT
        _later(0.2, lambda: log.open("ab").write(b"VMKIT_READY -\n"))
        assert _timed_wait(watch) < PROMPT


def test_the_process_exiting_wakes_it(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    try:
        with Watch(log, proc.pid) as watch:
            assert _timed_wait(watch) < PROMPT
    finally:
        proc.wait()


def test_nothing_happening_sleeps_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    with Watch(log) as watch:
        t0 = time.monotonic()
        watch.wait(0.3)
        assert time.monotonic() - t0 >= 0.29


def test_a_reused_inotify_fd_watches_only_its_new_file(tmp_path: Path) -> None:
    """A finished watch leaves its fd idle (closing one costs an RCU grace period); the
    next watch takes it, sees its own file's writes, and not the old file's."""
    from vmkit import filewatch

    old, new = tmp_path / "old.log", tmp_path / "new.log"
    old.write_bytes(b"")
    new.write_bytes(b"")
    with Watch(old) as first:
        assert first._inotify is not None
        fd = first._inotify.fd
    assert fd in filewatch._idle_fds
    with Watch(new) as second:
        assert second._inotify is not None and second._inotify.fd == fd
        old.open("ab").write(b"not watched any more\n")
        t0 = time.monotonic()
        second.wait(0.5)
        assert time.monotonic() - t0 >= 0.4  # the old file's write did not wake it
        _later(0.2, lambda: new.open("ab").write(b"VMKIT_READY -\n"))
        assert _timed_wait(second) < PROMPT
