"""QEMU's vhost-vsock (`vsock_cid`) against the real QEMU binary, as far as this host lets it
go: it has no /dev/vhost-vsock (docs/../shared/reference/this-machine.md), so QEMU must take
vmkit's whole argv and fail at exactly one place, opening the device. On a host that has the
device these tests skip: there the guest would boot, and an SSH server on vsock port 22 in
the guest is what `vmkit exec` needs next (the tiny guest has none, docs/architecture.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from vmkit.drivers.qemu.driver import VHOST_VSOCK
from vmkit.guest.build import find_built

pytestmark = pytest.mark.skipif(
    os.path.exists(VHOST_VSOCK), reason=f"{VHOST_VSOCK} exists here: QEMU would open it"
)
OPEN_FAILED = "vhost-vsock: failed to open vhost device: No such file or directory"


@pytest.mark.access_path("qemu-vhost-vsock", "contract")  # real QEMU, no guest reached
@pytest.mark.parametrize("arch", ["host", "arm64"])
def test_qemu_takes_the_vhost_vsock_argv_and_fails_only_opening_the_device(
    cli, guest, tmp_path: Path, arch: str
) -> None:
    doc = {"name": "v", "vsock_cid": 7, "networks": [], "accelerator": "tcg"}
    if arch == "arm64":  # qemu-system-aarch64's virt board, emulated (no build here: skip)
        arm = find_built(arch="arm64")
        if arm is None or shutil.which("qemu-system-aarch64") is None:
            pytest.skip("no built arm64 tiny guest or no qemu-system-aarch64")
        doc.update(arch="arm64", boot={"kernel": str(arm.kernel), "initrd": str(arm.initrd)})
    spec = tmp_path / "v.yaml"
    spec.write_text(yaml.safe_dump(doc))
    proc = cli("create", "-f", str(spec))  # vmkit refuses first: this host has no vhost_vsock
    assert proc.returncode == 1, proc.stderr
    assert "vsock_cid: QEMU's vhost-vsock needs /dev/vhost-vsock" in proc.stderr
    assert cli.json("ls") == []  # nothing half-created

    cli.env["VMKIT_VHOST_VSOCK"] = str(spec)  # vmkit's presence check only: QEMU opens its own
    cli.ok("create", "-f", str(spec))
    argv = cli.json("start", "v", "--dry-run")["argv"]
    assert argv[argv.index("vhost-vsock-pci,id=vsock0,guest-cid=7") - 1] == "-device"
    proc = cli("start", "v")
    assert proc.returncode != 0
    log = (Path(cli.home) / "vms" / "v" / "vmm.log").read_text()
    errors = [line for line in log.splitlines() if line.startswith("qemu-system-")]
    device = "-device vhost-vsock-pci,id=vsock0,guest-cid=7"
    assert errors == [f"{Path(argv[0]).name}: {device}: {OPEN_FAILED}"]
    assert OPEN_FAILED in proc.stderr and "Traceback" not in proc.stderr
