"""What the vfkit and krunkit drivers refuse before planning, each naming the field and the
fix: boot kinds, kernels of the wrong architecture, disks, NICs and shares they cannot take,
and values their option parsers would split."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vmkit.drivers.vfkit_argv import check_vsock, linux_bootloader, macos_bootloader, value
from vmkit.errors import InvalidInput, NotSupported
from vmkit.storage import kernel as kernelfmt

if TYPE_CHECKING:
    from vmkit.drivers.vfkit.driver import VfkitDriver
    from vmkit.spec import MachineSpec


def check(driver: VfkitDriver, spec: MachineSpec) -> None:
    """`VfkitDriver.check`: refuse what vfkit (or krunkit) cannot run, naming the field."""
    from vmkit.spec import EfiBoot, LinuxBoot, MacosBoot

    if isinstance(spec.boot, MacosBoot):
        check_macos(driver, spec)
    driver.check_rosetta(spec)
    if spec.rosetta and driver.arch != "aarch64":
        raise NotSupported("rosetta: Rosetta exists only on Apple silicon Macs")
    if spec.rosetta and isinstance(spec.boot, MacosBoot):
        raise NotSupported("rosetta: shares Rosetta with Linux guests; macOS guests have it")
    check_vsock(driver.name, spec.vsock_cid, isinstance(spec.boot, MacosBoot))
    for field, given in (
        ("hugepages", spec.hugepages),
        ("topology", spec.topology is not None),
        ("disks[].iops/bandwidth", any(d.iops or d.bandwidth for d in spec.disks)),
    ):
        if given:
            raise NotSupported(f"{field}: not supported by vmkit's {driver.name} driver yet")
    if spec.accelerator not in ("auto", "hvf"):
        raise InvalidInput(
            f"accelerator: {spec.accelerator!r} does not apply to {driver.name}, which runs "
            "on Apple's Hypervisor.framework; use accelerator: auto (or hvf)"
        )
    if isinstance(spec.boot, MacosBoot):
        pass  # checked above
    elif isinstance(spec.boot, LinuxBoot):
        if driver.efi_only:
            raise NotSupported(
                f"{driver.name} boots only through EFI firmware from a disk image: use "
                "boot: {kind: efi} with a bootable disk, or driver: vfkit for a kernel + initrd"
            )
        value("boot.kernel", spec.boot.kernel)
        if spec.boot.initrd is not None:
            value("boot.initrd", spec.boot.initrd)
        linux_bootloader(spec.boot.kernel, spec.boot.initrd, spec.boot.cmdline)
        check_kernel_arch(driver, spec.boot.kernel)
    elif isinstance(spec.boot, EfiBoot):
        if spec.boot.firmware is not None:
            raise NotSupported(
                f"boot.firmware: {driver.name} uses Apple's built-in EFI firmware; "
                "remove boot.firmware"
            )
        if not spec.disks:
            raise InvalidInput("boot.kind 'efi' needs a bootable disk image in disks")
    for i, disk in enumerate(spec.disks):
        if disk.path is None:  # made by `vmkit create` in the VM's folder (storage.prepare)
            if disk.size is not None and disk.format == "qcow2" and not driver.reads_qcow2:
                raise NotSupported(
                    f"disks[{i}]: {driver.name} cannot attach qcow2; make the new disk "
                    "with format: raw"
                )
            continue  # a qcow2 `clone:` base is converted to raw for vfkit at create
        driver.field_value(f"disks[{i}].path", disk.file)
        if disk.format == "qcow2" and not driver.reads_qcow2:
            raw = disk.file.with_suffix(".raw")
            raise NotSupported(
                f"disks[{i}]: {driver.name} cannot attach qcow2 ({disk.file}); convert it "
                f"with `vmkit disk convert --format raw {disk.file} {raw}` and use {raw}, "
                f"or give `clone: {disk.file}` and vmkit makes the VM a raw copy "
                "(or driver: krunkit, which reads qcow2)"
            )
        if disk.readonly and not driver.readonly_disks:
            raise NotSupported(
                f"disks[{i}]: vmkit's {driver.name} driver cannot attach a disk read-only yet"
            )
    for i, net in enumerate(spec.networks):
        if net.mode in ("user", "nat") and not driver.has_nat:
            raise NotSupported(
                f"networks[{i}]: {driver.name} has no built-in NAT (it needs a userspace "
                "network such as gvproxy, which vmkit does not run yet); use a vmkit switch "
                "(--net switch:NAME), networks: none, or driver: vfkit"
            )
        if net.mode == "tap":
            raise NotSupported(
                f"networks[{i}]: TAP devices exist only on Linux; on a Mac use nat "
                f"(vfkit) or a vmkit switch (--net switch:NAME)"
            )
    for i, share in enumerate(spec.shares):
        driver.field_value(f"shares[{i}].host", share.host)
        if share.readonly:
            raise NotSupported(
                f"shares[{i}] ({share.tag}): {driver.name}'s virtio-fs has no read-only "
                "option, and vmkit will not hand the guest write access you did not give; "
                "drop readonly, or mount it read-only in the guest (`mount -o ro`)"
            )
    if spec.serial_log is not None:
        driver.field_value("serial_log", spec.serial_log)
    if spec.balloon and not driver.features.balloon:
        raise NotSupported(f"balloon: {driver.name} has no virtio-balloon device")


def check_macos(driver: VfkitDriver, spec: MachineSpec) -> None:
    from vmkit.spec import MacosBoot

    assert isinstance(spec.boot, MacosBoot)
    if driver.efi_only:
        raise NotSupported(f"{driver.name} cannot run macOS guests; use driver: vfkit")
    if driver.arch != "aarch64":
        raise NotSupported("macOS guests need an Apple silicon Mac (Virtualization.framework)")
    if not spec.disks:
        raise InvalidInput("boot.kind 'macos' needs the macOS disk image in disks")
    macos_bootloader(spec.boot)  # refuses commas in the paths, by name


def check_kernel_arch(driver: VfkitDriver, kernel: Path) -> None:
    try:
        with kernel.open("rb") as f:
            head = f.read(0x400)
    except OSError:
        return  # a missing file is reported by the spec check
    if driver.arch == "aarch64" and (
        kernelfmt.is_bzimage(head) or (head[:4] == b"\x7fELF" and head[18:20] == b"\x3e\x00")
    ):
        raise InvalidInput(
            f"boot.kernel: {kernel} is an x86_64 kernel; Apple Silicon Macs boot arm64 "
            "kernels (an Image, a compressed vmlinuz or an EFI zboot image)"
        )
