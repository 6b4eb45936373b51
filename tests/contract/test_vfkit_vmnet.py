"""vmnet-helper networking for vfkit/krunkit (`--net vmnet:shared|host|bridged:IF`), with the
vfkit TEST DOUBLE and the vmnet-helper TEST DOUBLE (tests/contract/vmnet_helper_double.py):
the helper is started with the VM, serves the socket the VMM's NIC names, and is stopped
with the VM or by gc after a crash. Contract testing only: vmnet exists only on macOS."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from test_vfkit_argv import ctx_for, spec
from vfkit_oracle import assert_parses_as_rendered, vfkit_parse

from vmkit.drivers.vfkit import KrunkitDriver, VfkitDriver
from vmkit.errors import SpecError, VMFailed
from vmkit.machine import Host
from vmkit.net import vmnet
from vmkit.process import ProcessRef
from vmkit.spec import network_shorthand, spec_from_dict

DOUBLE = Path(__file__).resolve().parent / "vmnet_helper_double.py"


@pytest.fixture
def fake_vmnet(tmp_path: Path, vmkit_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The helper double as $VMKIT_VMNET_HELPER; returns the file its argv are logged to."""
    shim = tmp_path / "vmnet-helper"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} {DOUBLE} "$@"\n')
    shim.chmod(0o755)
    log = tmp_path / "vmnet-calls.jsonl"
    for key, val in (("VMKIT_VMNET_HELPER", str(shim)), ("VMNET_DOUBLE_LOG", str(log))):
        monkeypatch.setenv(key, val)
        vmkit_env[key] = val
    return log


# ---- spec and argv ---------------------------------------------------------------------------


def test_the_net_shorthand_and_its_refusals() -> None:
    assert network_shorthand("vmnet:shared") == {"mode": "vmnet", "vmnet": "shared"}
    assert network_shorthand("vmnet:bridged:en0") == {
        "mode": "vmnet",
        "vmnet": "bridged",
        "interface": "en0",
    }
    boot = {"kernel": "/k"}
    for net, match in (
        ({"mode": "vmnet"}, r"needs `vmnet: shared\|host\|bridged`"),
        ({"mode": "vmnet", "vmnet": "bridged"}, r"needs `interface: IF`"),
        ({"mode": "vmnet", "vmnet": "shared", "interface": "en0"}, r"and only it"),
        ({"mode": "vmnet", "vmnet": "nat"}, r"vmnet"),
    ):
        with pytest.raises(SpecError, match=match):
            spec_from_dict({"name": "v", "boot": boot, "networks": [net]}, check_files=False)


@pytest.mark.capability("vfkit", "net_vmnet")
@pytest.mark.capability("krunkit", "net_vmnet")
def test_the_nic_joins_the_helpers_socket(tmp_path: Path, files: dict[str, Path]) -> None:
    nets = [{"mode": "vmnet", "vmnet": "shared", "mac": "52:54:00:00:00:0c"}]
    plan = VfkitDriver(arch="aarch64", version=(0, 6, 2)).plan(
        spec(files, networks=nets), ctx_for(tmp_path)
    )
    sock = Path("/tmp/vk/abc.vn0")
    assert plan.sockets["vmnet0"] == sock
    assert f"virtio-net,unixSocketPath={sock},mac=52:54:00:00:00:0c" in plan.argv
    assert_parses_as_rendered(vfkit_parse({"a": plan.argv})["a"], plan.argv)
    efi = {"boot": {"kind": "efi"}, "disks": [{"path": str(files["disk"])}]}
    kplan = KrunkitDriver(arch="aarch64", version=(1, 0, 0)).plan(
        spec(files, networks=nets, **efi), ctx_for(tmp_path)
    )
    assert f"virtio-net,type=unixgram,path={sock},mac=52:54:00:00:00:0c,vfkitMagic=on" in (
        kplan.argv
    )


def test_the_helper_argv_and_when_it_needs_root(fake_vmnet: Path) -> None:
    sock = Path("/tmp/s")
    argv = vmnet.helper_argv({"vmnet": "bridged", "interface": "en0"}, sock, "ID")
    assert argv[1:] == ["--socket", "/tmp/s", "--interface-id", "ID",
                        "--operation-mode", "bridged", "--shared-interface", "en0"]  # fmt: skip
    assert vmnet.needs_root("15.3") and vmnet.needs_root("13.0")
    assert not vmnet.needs_root("26.0")
    assert vmnet.interface_id("a", 0) == vmnet.interface_id("a", 0) != vmnet.interface_id("a", 1)


# ---- the helper's lifecycle with the VM ------------------------------------------------------


def start(boot: dict[str, Any], name: str = "vn1", vmnet_kind: str = "shared") -> Any:
    net: dict[str, Any] = {"mode": "vmnet", "vmnet": vmnet_kind}
    if vmnet_kind == "bridged":
        net["interface"] = "en0"
    machine = Host().create(
        spec_from_dict({"name": name, "driver": "vfkit", "boot": boot, "networks": [net]})
    )
    machine.start()
    return machine


@pytest.mark.capability("vfkit", "net_vmnet")
def test_the_helper_starts_with_the_vm_and_stops_with_it(
    fake_vfkit: Any, fake_vmnet: Path, boot: dict[str, Any]
) -> None:
    machine = start(boot)
    rt = machine.runtime().to_json()
    helper = next(h for h in rt["helpers"] if h["kind"] == "vmnet")
    sock = Path(rt["sockets"]["vmnet0"])
    assert helper["socket"] == str(sock) and sock.exists()
    assert helper["interface"]["vmnet_start_address"] == "192.168.105.1"
    called = json.loads(fake_vmnet.read_text().splitlines()[-1])
    assert called[:2] == ["--socket", str(sock)]
    assert called[4:] == ["--operation-mode", "shared"]
    mac = machine.spec_json["networks"][0]["mac"]
    assert f"virtio-net,unixSocketPath={sock},mac={mac}" in rt["argv"]
    proc = ProcessRef(int(helper["pid"]), float(helper["create_time"]))
    assert machine.wait_ready(20).state == "ready"
    machine.stop(timeout=5)
    assert proc.wait_gone(5) and not sock.exists()


@pytest.mark.capability("vfkit", "net_vmnet", "crash_detection")
def test_gc_stops_the_helper_of_a_vm_that_died(
    fake_vfkit: Any, fake_vmnet: Path, boot: dict[str, Any], cli: Any
) -> None:
    machine = start(boot, "vn2", "bridged")
    rt = machine.runtime().to_json()
    helper = next(h for h in rt["helpers"] if h["kind"] == "vmnet")
    os.kill(int(rt["pid"]), signal.SIGKILL)
    ProcessRef(int(rt["pid"]), float(rt["create_time"])).wait_gone(5)
    cli.ok("gc")
    assert ProcessRef(int(helper["pid"]), float(helper["create_time"])).wait_gone(5)


def test_a_helper_that_cannot_get_root_fails_the_start_saying_how(
    fake_vfkit: Any, fake_vmnet: Path, boot: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMNET_DOUBLE", "needs-password")
    with pytest.raises(
        VMFailed, match=r"(?s)vmnet-helper for networks\[0\] did not start.*sudoers"
    ):
        start(boot, "vn3")
    assert Host().get("vn3").status().state in ("created", "stopped")
