"""`vmkit gc` removes the RAM converter's work folder of a `snapshot create` that was cut
off (its lock is free), never one a running conversion holds or one too new to be locked."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from vmkit.drivers.qemu import shared_ram
from vmkit.paths import runtime_dir

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def _work(name: str, locked: bool = True, age: float = 0.0) -> Path:
    work = runtime_dir() / f"{shared_ram.WORK_PREFIX}{name}"
    work.mkdir()
    (work / "qemu.log").write_text("")
    if locked:
        (work / shared_ram.WORK_LOCK).write_text("")
    if age:
        then = time.time() - age
        os.utime(work, (then, then))
    return work


def test_gc_removes_only_converter_folders_nobody_holds(vmkit_env, cli) -> None:
    dead = _work("dead")  # its vmkit died: the lock file is there, nobody holds it
    running = _work("running")
    fresh = _work("fresh", locked=False)  # just made, not locked yet
    old = _work("old", locked=False, age=3600)  # made, then vmkit died before locking
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(running / shared_ram.WORK_LOCK)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        report = cli.json("gc")
        assert not dead.exists() and not old.exists()
        assert running.exists() and fresh.exists()
        assert {str(dead), str(old)} <= set(report["removed_dirs"])
    finally:
        holder.kill()
        holder.wait()
    fd = os.open(running / shared_ram.WORK_LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the holder is gone: free again
    os.close(fd)
    assert str(running) in shared_ram.remove_stale_work_dirs() and not running.exists()
