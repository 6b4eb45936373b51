"""UEFI boot on real QEMU (TCG) with the distro's OVMF: a GPT disk with an EFI system
partition (systemd-boot + the tiny guest), as cloud images are laid out, boots through the
firmware to the readiness line, keeps its own variable store, and powers off on ACPI."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from esp_disk import make_bootable_disk, missing_tools

from vmkit.hostinfo import machine_arch

pytestmark = [
    pytest.mark.skipif(machine_arch() != "x86_64", reason="the ESP holds an x86_64 loader"),
    pytest.mark.skipif(bool(missing_tools()), reason=f"missing {missing_tools()} (setup.sh)"),
]


@pytest.fixture
def efi_disk(guest, tmp_path: Path) -> Path:
    return make_bootable_disk(
        tmp_path / "esp-disk.raw",
        guest.bzimage,  # Debian's vmlinuz: a bzImage with the EFI stub
        guest.initrd,
        "console=ttyS0 quiet vmkit.marker=EFI_READY",
    )


@pytest.mark.capability("qemu", "boot_efi")
def test_a_gpt_disk_boots_through_uefi_to_ready_then_stops_on_acpi(cli, efi_disk: Path) -> None:
    ready = cli.json(
        "run", "efi1", "--efi", "--disk", str(efi_disk), "--accel", "tcg",
        "--marker", "EFI_READY", "--timeout", "120",
    )  # fmt: skip
    assert ready["state"] == "ready"
    info = cli.json("inspect", "efi1")
    argv = info["runtime"]["argv"]
    vm_dir = cli.home / "vms" / "efi1"
    vars_file = vm_dir / "efi-vars.fd"
    assert any(a.startswith("if=pflash") and "readonly=on" in a for a in argv)
    assert f"if=pflash,format=raw,unit=1,file={vars_file}" in argv
    assert stat.S_IMODE(os.stat(vars_file).st_mode) == 0o600  # the VM's own, private
    assert "virtio-blk-pci,drive=disk0,id=vd0,bootindex=0" in argv
    stopped = cli.json("stop", "efi1", "--timeout", "60")
    assert stopped[0]["step"] == "acpi", stopped
    cli.ok("rm", "efi1")
    assert not vars_file.exists()


def test_efi_flags_that_contradict_are_refused(cli, efi_disk: Path) -> None:
    proc = cli("create", "e2", "--efi", "--kernel", str(efi_disk), "--disk", str(efi_disk))
    assert proc.returncode == 2 and "--efi boots what the disk holds" in proc.stderr
    proc = cli("create", "e3", "--efi")
    assert proc.returncode == 2 and "needs a bootable disk image in disks" in proc.stderr
    assert cli.json("ls") == []


def test_the_variable_store_is_the_vms_own_and_travels_with_its_snapshots(
    cli, efi_disk: Path
) -> None:
    from vmkit.drivers.qemu_firmware import find_uefi

    template = find_uefi("x86_64").vars_template
    assert template is not None
    cli.json(
        "run", "efi2", "--efi", "--disk", str(efi_disk), "--accel", "tcg",
        "--marker", "EFI_READY", "--timeout", "120",
    )  # fmt: skip
    own = cli.home / "vms" / "efi2" / "efi-vars.fd"
    assert own.read_bytes() != template.read_bytes()  # the firmware wrote its boot options
    cli.ok("snapshot", "create", "efi2", "s1")
    saved = own.read_bytes()
    cli.ok("restore", "s1", "--name", "efi3", "--timeout", "120")
    assert (cli.home / "vms" / "efi3" / "efi-vars.fd").read_bytes() == saved
    assert cli.json("inspect", "efi3")["status"]["state"] == "ready"
    cli.ok("rm", "--force", "efi2", "efi3")
    cli.ok("snapshot", "rm", "s1")


@pytest.mark.skipif(
    not Path("/usr/share/AAVMF/AAVMF_CODE.fd").exists(), reason="qemu-efi-aarch64 (setup.sh)"
)
@pytest.mark.capability("qemu", "boot_efi", "arch_emulation")
def test_an_arm64_gpt_disk_boots_through_aavmf_emulated(cli, tmp_path: Path) -> None:
    """The layout krunkit (EFI only) and vfkit's EFI boot take: an arm64 ESP with
    systemd-boot, here through real AAVMF firmware under emulation."""
    from esp_disk import fetch_systemd_boot

    from vmkit.guest.build import build, find_built

    arm = find_built(arch="arm64") or build(arch="arm64")
    disk = make_bootable_disk(
        tmp_path / "arm-esp.raw",
        arm.bzimage,  # Debian's arm64 vmlinuz: an Image with the EFI stub
        arm.initrd,
        "quiet vmkit.marker=A64_EFI",
        loader=fetch_systemd_boot("arm64", tmp_path / "sdboot"),
        removable_name="BOOTAA64.EFI",
    )
    ready = cli.json(
        "run", "ae", "--arch", "arm64", "--efi", "--disk", str(disk),
        "--marker", "A64_EFI", "--timeout", "180",
    )  # fmt: skip
    assert ready["state"] == "ready"
    argv = cli.json("inspect", "ae")["runtime"]["argv"]
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd" in argv
    assert cli.json("stop", "ae", "--timeout", "60")[0]["step"] == "acpi"
