"""entry.leave: a finished CLI command exits without the interpreter's teardown, and loses
nothing doing so: all of stdout and stderr arrive, the exit code is kept, and where a
normal exit is still needed (another thread alive, a message as the code) it gets one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _vmkit(*args: str, env_home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmkit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "VMKIT_HOME": str(env_home)},
    )


def test_all_output_arrives_and_the_code_is_kept(tmp_path: Path) -> None:
    done = _vmkit("spec", "schema", env_home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["title"] == "MachineSpec"  # complete, ~12 KB through a pipe
    missing = _vmkit("start", "nope", env_home=tmp_path / "home")
    assert missing.returncode == 2
    assert missing.stderr == "error: no VM named 'nope' (see `vmkit ls`)\n"


@pytest.mark.parametrize(
    ("code", "expected_rc", "expected_err"),
    [(0, 0, ""), (3, 3, ""), (None, 0, ""), ("a message", 1, "a message\n")],
)
def test_leave_keeps_every_kind_of_exit_code(
    code: object, expected_rc: int, expected_err: str
) -> None:
    script = (
        "import sys\nfrom vmkit.entry import leave\n"
        "sys.stdout.write('x' * 200000)\n"  # more than a pipe holds: flushed before _exit
        f"leave({code!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (done.returncode, done.stderr, len(done.stdout)) == (expected_rc, expected_err, 200000)


def test_a_live_thread_gets_a_normal_exit() -> None:
    script = (
        "import threading, time\nfrom vmkit.entry import leave\n"
        "def late():\n    time.sleep(0.3)\n    print('thread finished', flush=True)\n"
        "threading.Thread(target=late).start()\n"
        "leave(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "thread finished\n")
