"""macOS guests on vfkit (Apple silicon): argv, refusals, and the 2-running-guests limit.
Contract-tested only, against vfkit's documented grammar: nothing here ran on a Mac."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from vfkit_grammar import parse_argv

from vmkit.drivers.base import LaunchContext
from vmkit.drivers.cloud_hypervisor import CloudHypervisorDriver
from vmkit.drivers.qemu import QemuDriver
from vmkit.drivers.vfkit import KrunkitDriver, VfkitDriver
from vmkit.errors import InvalidInput, NotSupported, VMStateError
from vmkit.spec import missing_files, spec_from_dict


def make(tmp_path: Path, name: str = "mac1", **over: Any) -> Any:
    files = {k: tmp_path / k for k in ("machine-id", "hw-model", "aux.img", "disk.img")}
    for p in files.values():
        p.write_bytes(b"\0" * 512)
    data: dict[str, Any] = {
        "name": name,
        "boot": {
            "kind": "macos",
            "machine_identifier": str(files["machine-id"]),
            "hardware_model": str(files["hw-model"]),
            "aux_image": str(files["aux.img"]),
        },
        "disks": [{"path": str(files["disk.img"])}],
        "driver": "vfkit",
        **over,
    }
    return spec_from_dict(data, check_files=False)


def ctx(tmp_path: Path) -> LaunchContext:
    return LaunchContext(
        vm_dir=tmp_path,
        serial_log=tmp_path / "serial.log",
        events_log=tmp_path / "events.log",
        sockets={"rest": Path("/tmp/vk/mac.rest")},
        accelerator="hvf",
    )


@pytest.mark.capability("vfkit", "boot_macos")
def test_macos_bootloader_in_vfkit_canonical_form(tmp_path):
    spec = make(tmp_path)
    argv = VfkitDriver(arch="aarch64", version=(0, 6, 1)).plan(spec, ctx(tmp_path)).argv
    boot = argv[argv.index("--bootloader") + 1]
    assert boot == (
        f"macos,machineIdentifierPath={tmp_path}/machine-id,"
        f"hardwareModelPath={tmp_path}/hw-model,auxImagePath={tmp_path}/aux.img"
    )
    parse_argv(argv)  # the whole argv still follows vfkit's grammar


def test_macos_guest_refusals(tmp_path):
    with pytest.raises(NotSupported, match="Apple silicon"):
        VfkitDriver(arch="x86_64", version=(0, 6, 1)).check(make(tmp_path))
    with pytest.raises(NotSupported, match="cannot run macOS guests"):
        KrunkitDriver(arch="aarch64", version=(0, 2, 0)).check(make(tmp_path, driver="krunkit"))
    with pytest.raises(InvalidInput, match="needs the macOS disk image"):
        VfkitDriver(arch="aarch64", version=(0, 6, 1)).check(make(tmp_path, disks=[]))
    for driver in (QemuDriver(arch="aarch64"), CloudHypervisorDriver()):
        with pytest.raises(NotSupported, match="use driver: vfkit"):
            driver.check(make(tmp_path, driver="auto", accelerator="auto"))
    comma = tmp_path / "a,b"
    comma.mkdir()
    (comma / "aux").write_bytes(b"\0")
    bad = make(tmp_path)
    bad.boot.aux_image = comma / "aux"
    with pytest.raises(InvalidInput, match=r"boot\.aux_image"):
        VfkitDriver(arch="aarch64", version=(0, 6, 1)).check(bad)


def test_missing_macos_platform_files_are_named(tmp_path):
    spec = make(tmp_path)
    (tmp_path / "hw-model").unlink()
    assert [f for f, _ in missing_files(spec)] == ["boot.hardware_model"]


def test_at_most_two_macos_guests_run_at_once(tmp_path):
    drv = VfkitDriver(arch="aarch64", version=(0, 6, 1))
    mac = {"name": "m", "boot": {"kind": "macos"}}
    linux = {"name": "l", "boot": {"kind": "linux"}}
    drv.host_limits(make(tmp_path), lambda: [dict(mac, name="m1"), linux, linux])  # one: ok
    with pytest.raises(VMStateError, match=r"at most 2 macOS guests.*m1, m2 are running"):
        drv.host_limits(make(tmp_path), lambda: [dict(mac, name="m2"), dict(mac, name="m1")])
    # Linux guests are not limited
    linux_spec = spec_from_dict(
        {"name": "l9", "boot": {"kernel": str(tmp_path / "disk.img")}, "driver": "vfkit"},
        check_files=False,
    )
    drv.host_limits(linux_spec, lambda: [dict(mac, name="m1"), dict(mac, name="m2")])
