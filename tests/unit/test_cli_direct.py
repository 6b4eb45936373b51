"""The click-free paths (`vmkit run --pool NAME [--json]`, `vmkit restore SNAP [--name N]
[--json]`, cli_direct.py) and what they are built from: which argument lists they take (the
rest go to the click command), the pool filler's spawn without subprocess, and temporary
files made without tempfile. Their output against the click commands' is checked on real
guests (tests/e2e/test_pool.py, test_advanced.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmkit.cli_direct import parse, restore, run
from vmkit.process import spawn_orphan
from vmkit.store import atomic_write_json, temp_dir_in


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (["--pool", "warm"], {"--pool": "warm"}),
        (["--pool=warm", "--json"], {"--pool": "warm", "--json": ""}),
        (["--json", "--pool", "warm"], {"--json": "", "--pool": "warm"}),
        (["snap", "--name", "a"], {"1": "snap", "--name": "a"}),
        (["--name=a", "snap"], {"--name": "a", "1": "snap"}),
    ],
)
def test_plain_long_options_are_taken(args: list[str], want: dict[str, str]) -> None:
    assert parse(args, ("--pool", "--name"), ("--json",)) == want


@pytest.mark.parametrize(
    "args",
    [
        ["--pool"],  # no value: click says so
        ["--pool="],
        ["--pool", "--json"],  # an option where the value should be
        ["--pool", "a", "--pool", "b"],
        ["--pool", "a", "--json", "--json"],
        ["--pool", "a", "--cpus", "2"],
        ["--pool", "a", "-h"],
        ["--json=yes"],
        ["--", "snap"],
        [""],
    ],
)
def test_anything_else_is_refused_for_click(args: list[str]) -> None:
    with pytest.raises(ValueError):
        parse(args, ("--pool",), ("--json",))


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["name", "--pool", "a"],  # refused with its reason by the click command
        ["--pool", "a", "--wait-for", "ssh"],
        ["--pool", "a", "--help"],
        ["--json"],
        ["a", "b"],
        ["name", "--memory", "1G"],
        ["name", "--kernel", "/k"],
        ["name", "--wait-for", "ssh"],
        ["name", "-f", "spec.yaml"],
        ["name", "--net", "nat", "--json"],
        ["name", "--help"],
        ["name", "--driver", "nosuch"],  # click's Choice refuses it, naming the drivers
    ],
)
def test_a_run_that_is_not_plain_goes_to_click(args: list[str]) -> None:
    """Only `NAME [--json]` and `--pool NAME [--json]` are answered here."""
    assert run(args) is None


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["a", "b"],
        ["snap", "--driver", "qemu"],
        ["snap", "--no-wait"],
        ["snap", "--timeout", "5"],
        ["snap", "--memory-restore", "ondemand"],
        ["--name", "x"],
        ["snap", "--help"],
    ],
)
def test_a_restore_with_other_options_goes_to_click(args: list[str]) -> None:
    assert restore(args) is None


PROBE = """
import json, sys
import vmkit.entry
from vmkit.entry import main


def leave(code):  # the real one ends the process before the probe can look
    print("EXIT " + json.dumps(code))
    raise SystemExit(code)


vmkit.entry.leave = leave
sys.argv = ["vmkit", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print("CLICK " + json.dumps("click" in sys.modules))
"""


def test_the_console_script_answers_a_hand_out_without_click(vmkit_env: dict[str, str]) -> None:
    """An unknown pool gets click's own error and exit code, from the click-free path."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(["run", "--pool", "nope"])],
        env=vmkit_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "CLICK false" in proc.stdout and "EXIT 2" in proc.stdout, proc
    click = subprocess.run(
        [sys.executable, "-m", "vmkit.cli", "run", "--pool", "nope"],
        env=vmkit_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert click.returncode == 2 and proc.stderr == click.stderr != ""
    # a form it declines is the click command's: it loads click and refuses it there
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(["run", "x", "--pool", "nope"])],
        env=vmkit_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "CLICK true" in proc.stdout and "--pool hands out a copy as it is" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["run", "Not_A_Name"],
        ["run", "Not_A_Name", "--driver", "qemu", "--json"],
        ["restore", "nope"],
        ["restore", "nope", "--name", "x", "--json"],
    ],
)
def test_the_console_script_runs_and_restores_without_click(
    vmkit_env: dict[str, str], args: list[str]
) -> None:
    """A bad VM name or an unknown snapshot gets click's own error and exit code, from the
    click-free path (real runs and restores by each path: tests/e2e)."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        env=vmkit_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "CLICK false" in proc.stdout and "EXIT 2" in proc.stdout, proc
    click = subprocess.run(
        [sys.executable, "-m", "vmkit.cli", *args],
        env=vmkit_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert click.returncode == 2 and proc.stderr == click.stderr != ""


def test_an_orphan_gets_its_own_session_the_log_and_no_inherited_fds(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    report = tmp_path / "report.json"
    leak_r, leak_w = os.pipe()
    os.set_inheritable(leak_w, True)  # an fd an exec would pass on: the child must not get it
    child = (
        "import json, os, sys, time; print('to the log'); print('err', file=sys.stderr); "
        "time.sleep(1); "
        f"json.dump({{'sid': os.getsid(0) == os.getpid(), 'stdin': sys.stdin.read(), "
        f"'fds': sorted(int(n) for n in os.listdir('/proc/self/fd'))}}, open({str(report)!r}, 'w'))"
    )
    try:
        spawn_orphan([sys.executable, "-c", child], log)
    finally:
        os.close(leak_w)
    # EOF while the child still sleeps: it does not hold the pipe's write end
    assert os.read(leak_r, 1) == b""
    assert not report.exists()
    os.close(leak_r)
    deadline = time.monotonic() + 30
    while not report.exists() or not report.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    got = json.loads(report.read_text())
    assert got["sid"] is True and got["stdin"] == ""
    assert leak_w not in got["fds"]
    assert log.read_text() == "to the log\nerr\n"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_temporary_files_and_folders_are_private(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temp file left
    made = {temp_dir_in(tmp_path, ".creating-x-") for _ in range(20)}
    assert len(made) == 20
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in made)
    assert all(d.name.startswith(".creating-x-") for d in made)
