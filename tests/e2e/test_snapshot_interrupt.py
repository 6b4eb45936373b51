"""`snapshot create` cut off while the guest is paused, and snapshots of a paused guest, on a
real QEMU guest (issue 15, items 5 and 14).

The CLI runs as a subprocess and is signalled at the step "saving": once the RAM state file
exists in the snapshot's staging folder (the guest is paused then, and QEMU is writing).
QEMU's own answer over QMP is the oracle: `running` vs `paused`/`postmigrate`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from vmkit.drivers.qmp import QMP

TCG = ("--accel", "tcg")


def _qemu_status(cli, name: str) -> str:
    rt = json.loads((cli.home / "vms" / name / "runtime.json").read_text())
    sock = rt["sockets"]["qmp"]
    with QMP(sock) as q:
        return str(q.execute("query-status")["status"])


def _runtime(cli, name: str) -> dict:
    return json.loads((cli.home / "vms" / name / "runtime.json").read_text())


def _snapshot_cut_at_saving(cli, name: str, snap: str, sig: int) -> int | None:
    """Run `snapshot create`, send `sig` at the step "saving"; its exit code, or None when
    the snapshot finished before the step was seen (the race was lost)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmkit.cli", "snapshot", "create", name, snap],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    root = cli.home / "snapshots"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if any(root.glob(".creating-*/state.qemu")):
            proc.send_signal(sig)
            break
        time.sleep(0.001)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        return None
    assert "Traceback" not in err, err
    return proc.returncode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_caught_signal_resumes_the_guest_before_exiting(cli, guest, sig: int) -> None:
    cli.ok("run", "snap", *TCG)
    for attempt in range(5):
        code = _snapshot_cut_at_saving(cli, "snap", f"s{attempt}", sig)
        if code is None:
            continue  # the snapshot was faster than the step; try again
        assert code == 130
        assert _qemu_status(cli, "snap") == "running"  # before any vmkit verb ran
        assert "paused_by_snapshot" not in _runtime(cli, "snap")
        assert not list((cli.home / "snapshots").glob(".creating-*"))
        break
    else:
        pytest.fail("the step 'saving' was never caught")
    cli.ok("snapshot", "create", "snap", "after")  # QEMU is usable for the next one


def test_sigkill_leaves_a_marker_and_the_next_status_resumes_the_guest(cli, guest) -> None:
    cli.ok("run", "snap", *TCG)
    # vmkit kills itself (SIGKILL) at the step "snapshot:paused" (src/vmkit/faults.py)
    proc = cli.__class__({**cli.env, "VMKIT_FAULT": "snapshot:paused"}, cli.home)(
        "snapshot", "create", "snap", "k"
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _qemu_status(cli, "snap") == "paused"  # what the killed snapshot left
    assert "paused_by_snapshot" in _runtime(cli, "snap")
    assert cli.json("ls")[0]["state"] in ("ready", "running")  # ls resumed it
    assert _qemu_status(cli, "snap") == "running"
    assert "paused_by_snapshot" not in _runtime(cli, "snap")
    # killed mid-save (QEMU still writing the state file): the next verb cancels the save
    for attempt in range(5):
        code = _snapshot_cut_at_saving(cli, "snap", f"k{attempt}", signal.SIGKILL)
        if code is None or _qemu_status(cli, "snap") == "running":
            continue  # the snapshot was faster than the step; try again
        cli.ok("gc")
        assert _qemu_status(cli, "snap") == "running"
        break
    else:
        pytest.fail("never killed while the guest was paused")
    cli.ok("snapshot", "create", "snap", "after")


def test_snapshots_of_a_paused_guest_keep_it_paused_and_work_again(cli, guest) -> None:
    cli.ok("run", "p", *TCG)
    cli.ok("pause", "p")
    out = cli.ok("snapshot", "create", "p", "one").stdout
    assert "stays paused" in out and "kept running" not in out
    assert _qemu_status(cli, "p") == "paused"  # not postmigrate
    assert cli.json("inspect", "p")["status"]["state"] == "paused"
    cli.ok("snapshot", "create", "p", "two")  # failed from postmigrate before
    assert _qemu_status(cli, "p") == "paused"
    cli.ok("resume", "p")
    assert _qemu_status(cli, "p") == "running"
    restored = cli.json("restore", "two", "--name", "r")
    assert restored["state"] in ("ready", "running", "paused"), restored
