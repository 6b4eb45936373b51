"""The Cloud Hypervisor lifecycle through vmkit's Machine layer and CLI, with the TEST DOUBLE
(tests/contract/ch_double.py) on PATH as `cloud-hypervisor`: start (vm.create + vm.boot),
readiness, pause/resume, and each step of the stop escalation. Contract testing only:
nothing here ran Cloud Hypervisor, and docs/capabilities.md says so."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

DOUBLE = Path(__file__).resolve().parent / "ch_double.py"
CAP = pytest.mark.capability


@pytest.fixture
def fake_ch(tmp_path: Path, vmkit_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "cloud-hypervisor"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} {DOUBLE} "$@"\n')
    shim.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    monkeypatch.setenv("PATH", path)
    vmkit_env["PATH"] = path

    def behave(*switches: str) -> None:
        vmkit_env["CH_DOUBLE"] = ",".join(switches)

    behave()
    return behave


def _args(tmp_path: Path) -> list[str]:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0" * 512)
    return ["--driver", "cloud-hypervisor", "--accel", "kvm", "--kernel", str(kernel)]


@CAP("cloud-hypervisor", "graceful_stop", "readiness", "pause", "kill")
def test_run_pause_and_stop_by_power_button(cli, fake_ch, tmp_path):
    dry = cli.json("create", "c1", *_args(tmp_path))
    assert dry["driver"] == "cloud-hypervisor"
    plan = cli.json("start", "c1", "--dry-run")
    assert [r["endpoint"] for r in plan["api_requests"]] == ["vm.create", "vm.boot"]
    cli.ok("start", "c1", "--wait")
    assert cli.json("inspect", "c1")["status"]["state"] == "ready"
    assert cli.json("pause", "c1")[0]["state"] == "paused"
    assert cli.json("resume", "c1")[0]["state"] == "ready"
    stopped = cli.json("stop", "c1", "--timeout", "5")
    assert stopped[0]["step"] == "acpi"
    status = cli.json("inspect", "c1")["status"]
    assert status["state"] == "stopped"


@CAP("cloud-hypervisor", "graceful_stop")
def test_stop_escalates_to_vm_shutdown_when_the_guest_ignores_the_button(cli, fake_ch, tmp_path):
    fake_ch("ignore-power")
    cli.ok("run", "c2", *_args(tmp_path))
    stopped = cli.json("stop", "c2", "--timeout", "1")
    assert stopped[0]["step"] == "vm.shutdown"
    assert cli.json("inspect", "c2")["status"]["state"] == "stopped"


@CAP("cloud-hypervisor", "kill")
def test_kill_when_nothing_answers(cli, fake_ch, tmp_path):
    fake_ch("ignore-power", "ignore-sigterm")
    cli.ok("run", "c3", *_args(tmp_path))
    out = cli.ok("kill", "c3").stdout
    assert "killed" in out
    assert cli.json("inspect", "c3")["status"]["state"] == "stopped"
