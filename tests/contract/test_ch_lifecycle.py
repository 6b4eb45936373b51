"""The Cloud Hypervisor lifecycle through vmkit's Machine layer and CLI, with the TEST DOUBLE
(tests/contract/ch_double.py) on PATH as `cloud-hypervisor`: start (vm.create + vm.boot),
readiness, pause/resume, and each step of the stop escalation. Contract testing only:
nothing here ran Cloud Hypervisor, and docs/capabilities.md says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
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

    vmkit_env["CH_DOUBLE_RECORD"] = str(tmp_path / "ch-requests.jsonl")

    def behave(*switches: str) -> None:
        vmkit_env["CH_DOUBLE"] = ",".join(switches)

    behave()
    return behave


def recorded(tmp_path: Path, endpoint: str) -> list[dict]:
    """What the double (each fake CH process) was sent on `endpoint`, and the config then."""
    lines = (tmp_path / "ch-requests.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["endpoint"] == endpoint]


def _args(tmp_path: Path) -> list[str]:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF" + b"\0" * 508)  # starts like a kernel
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


@CAP("cloud-hypervisor", "crash_detection")
def test_guest_poweroff_is_a_clean_stop_and_a_killed_vmm_a_failure(cli, fake_ch, tmp_path):
    """Read back from CH's event-monitor log (pretty JSON records), not from a vmkit stop."""
    from vmkit.drivers.ch_api import CHClient

    cli.ok("run", "c4", *_args(tmp_path))
    sockets = cli.json("inspect", "c4")["runtime"]["sockets"]
    CHClient(sockets["api"]).put("vm.power-button")  # the guest answers by powering off
    deadline = time.monotonic() + 10
    while (st := cli.json("inspect", "c4")["status"])["state"] != "stopped":
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    assert st["reason"] == "VMM exited: guest shutdown"
    # a VMM killed behind vmkit's back leaves no shutdown event: failed, with the reason
    cli.ok("run", "c5", *_args(tmp_path))
    os.kill(cli.json("inspect", "c5")["runtime"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (st := cli.json("inspect", "c5")["status"])["state"] != "failed":
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    assert "no shutdown was requested" in st["reason"]


@CAP("cloud-hypervisor", "crash_detection", "graceful_stop")
def test_a_vcpu_crash_during_stop_is_a_failure_not_an_acpi_poweroff(cli, fake_ch, tmp_path):
    """Bug A. The real binary's vCPU dies here only after ~100 s, so the double crashes on
    the power button instead: same events as a poweroff, and vmm.log's real CH line."""
    fake_ch("vcpu-error")
    cli.ok("run", "c7", *_args(tmp_path))
    stopped = cli.json("stop", "c7", "--timeout", "5")
    assert stopped[0]["step"] == "crashed"
    st = cli.json("inspect", "c7")["status"]
    assert st["state"] == "failed"
    assert "vCPU error (vCPU run failed: InternalError)" in st["reason"]


@CAP("cloud-hypervisor", "hotplug_disk")
def test_an_unplug_the_guest_acknowledges_frees_the_file_and_the_id(cli, fake_ch, tmp_path):
    """Only a booted guest acknowledges an eject, so only the double can show the end of a
    pending removal (the real binary shows the pending part: tests/e2e/test_ch_vmm.py)."""
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"\0" * 4096)
    cli.ok("run", "c8", *_args(tmp_path))
    cli.ok("disk", "add", "c8", str(disk))
    out = cli.ok("disk", "rm", "c8", "hd0").stdout
    assert "pending guest acknowledgement" in out
    deadline = time.monotonic() + 20
    while (proc := cli("disk", "add", "c8", str(disk), "--json")).returncode != 0:
        assert "still attached as hd0" in proc.stderr  # until the guest lets go
        assert time.monotonic() < deadline
        time.sleep(0.1)
    again = json.loads(proc.stdout)
    assert again["id"] == "hd0"
    assert list(cli.json("inspect", "c8")["runtime"]["hotplug"]) == ["hd0"]


def test_a_vm_ch_cannot_create_fails_with_chs_reason_and_no_vmm_left(cli, fake_ch, tmp_path):
    fake_ch("fail-create")
    cli.ok("create", "c6", *_args(tmp_path))
    proc = cli("start", "c6")
    assert proc.returncode == 1
    assert "vm.create: HTTP 500: The VM could not be created: Cannot open kernel" in proc.stderr
    status = cli.json("inspect", "c6")["status"]
    assert status["state"] == "failed" and status["pid"] is None
    assert "Cannot open kernel" in status["reason"]


@CAP("cloud-hypervisor", "snapshot")
def test_a_restored_copy_uses_its_own_disks_serial_log_and_sockets(cli, fake_ch, tmp_path):
    """CH restores the devices the snapshot's config.json names: vmkit must re-point them at
    the copy, or the copy would write the source VM's disks and serial log."""
    disk = tmp_path / "data.img"
    disk.write_bytes(b"\0" * (1 << 20))
    cli.ok("run", "src", *_args(tmp_path), "--disk", str(disk))
    cli.json("snapshot", "create", "src", "s1")
    restored = cli.json("restore", "s1", "--name", "copy")  # waits for ready by default
    assert restored["state"] == "ready"
    copy_dir = Path(cli.json("inspect", "copy")["paths"]["dir"])
    (restore,) = recorded(tmp_path, "vm.restore")
    assert restore["status"] == 204 and restore["body"]["resume"] is True
    config = restore["config"]
    assert config["disks"][0]["path"] == str(copy_dir / "disk0.raw")
    assert config["serial"]["file"] == str(copy_dir / "serial.log")
    (created,) = recorded(tmp_path, "vm.create")
    assert created["body"]["disks"][0]["path"] == str(disk)  # the source keeps its own
    runtime = cli.json("inspect", "copy")["runtime"]
    assert runtime["ready"]["inherited_from"] == "s1"
    cli.ok("kill", "src", "copy")


@CAP("cloud-hypervisor", "net_tap")
def test_a_tap_in_a_namespace_is_handed_to_ch_as_an_fd(cli, fake_ch, tmp_path):
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.skip("TAPs and network namespaces need root and /dev/net/tun")
    ns = f"vkcl-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        cli.ok("run", "t1", *_args(tmp_path), "--net", f"tap:vkclt0@{ns}")
        (add,) = recorded(tmp_path, "vm.add-net")
        assert add["status"] == 204 and add["taps"] == ["vkclt0"]  # cold-added before boot
        assert [r["status"] for r in recorded(tmp_path, "vm.boot")] == [204]
        cli.ok("stop", "t1", "--timeout", "5")
        links = subprocess.run(
            ["ip", "-n", ns, "-o", "link"], capture_output=True, text=True, check=True
        ).stdout
        assert "vkclt0" not in links  # vmkit made it, vmkit removed it
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@CAP("cloud-hypervisor", "shares")
def test_a_share_gets_a_virtiofsd_on_the_socket_ch_is_told(cli, fake_ch, tmp_path):
    import stat

    from vmkit.shares.virtiofsd import find

    try:
        find()
    except Exception as exc:
        pytest.skip(str(exc))
    shared = tmp_path / "shared"
    shared.mkdir()
    cli.ok("run", "f1", *_args(tmp_path), "--share", f"{shared}:docs")
    (created,) = recorded(tmp_path, "vm.create")
    (fs,) = created["body"]["fs"]
    assert fs["tag"] == "docs"
    assert stat.S_ISSOCK(Path(fs["socket"]).stat().st_mode)  # virtiofsd listens there
    helpers = cli.json("inspect", "f1")["runtime"]["helpers"]
    assert [h["kind"] for h in helpers] == ["virtiofsd"]
    # CH cannot snapshot virtio-fs: refused before the VM is touched
    proc = cli("snapshot", "create", "f1", "s")
    assert proc.returncode != 0 and "virtio-fs" in proc.stderr
    assert cli.json("inspect", "f1")["status"]["state"] == "ready"
    assert not recorded(tmp_path, "vm.pause")
    cli.ok("kill", "f1")
    assert not Path(fs["socket"]).exists()
