"""The lifecycle on a REAL Cloud Hypervisor, run where one exists: `cloud-hypervisor` on PATH
(or VMKIT_CLOUD_HYPERVISOR naming it) and a /dev/kvm that runs ordinary guests. Elsewhere —
including the project's CI machine, whose KVM is kvm_pvm — every test here skips, saying why.
"""

from __future__ import annotations

import os
import shutil

import pytest

from vmkit.hostinfo import kvm_state

CH = os.environ.get("VMKIT_CLOUD_HYPERVISOR") or shutil.which("cloud-hypervisor")
KVM = kvm_state()
pytestmark = [
    pytest.mark.skipif(
        CH is None,
        reason="cloud-hypervisor is not installed "
        "(not packaged in Debian 12; set VMKIT_CLOUD_HYPERVISOR)",
    ),
    pytest.mark.skipif(not KVM.usable, reason=f"KVM cannot run ordinary guests here: {KVM.reason}"),
]
ARGS = ("--driver", "cloud-hypervisor", "--accel", "kvm")


def test_run_ready_pause_stop(cli, guest):
    ready = cli.json("run", "ch1", *ARGS)
    assert ready["state"] == "ready"
    assert cli.json("pause", "ch1")[0]["state"] == "paused"
    assert cli.json("resume", "ch1")[0]["state"] == "ready"
    stopped = cli.json("stop", "ch1", "--timeout", "30")
    assert stopped[0]["step"] == "acpi"
    assert cli.json("inspect", "ch1")["status"]["state"] == "stopped"


def test_snapshot_restore_and_kill(cli, guest):
    cli.ok("run", "ch2", *ARGS)
    snap = cli.json("snapshot", "create", "ch2", "s")
    assert snap["driver"] == "cloud-hypervisor"
    restored = cli.json("restore", "s", "--name", "ch3", "--no-wait")
    assert restored["state"] in ("running", "ready")
    cli.ok("kill", "ch2", "ch3")
    assert {v["state"] for v in cli.json("ls")} == {"stopped"}
