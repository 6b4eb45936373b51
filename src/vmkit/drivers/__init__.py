"""VMM drivers and driver selection."""

from __future__ import annotations

import shutil

from vmkit.drivers.base import Driver
from vmkit.errors import InvalidInput, NotSupported
from vmkit.hostinfo import foreign_arch, is_macos, kvm_state, machine_arch

# Drivers that do not exist in this version yet.
PLANNED: dict[str, str] = {}


def get_driver(name: str, arch: str | None = None) -> Driver:
    """The driver `name` for guests of `arch` (None/auto: the host's). Only QEMU emulates
    another architecture."""
    if name == "qemu":
        from vmkit.drivers.qemu import QemuDriver

        return QemuDriver(arch=None if arch in (None, "auto") else arch)
    if foreign_arch(arch) and name in ("cloud-hypervisor", "vfkit", "krunkit"):
        raise InvalidInput(
            f"arch: {name} runs only {machine_arch()} guests (hardware virtualization); "
            f"use driver: qemu to emulate {arch}"
        )
    if name == "cloud-hypervisor":
        from vmkit.drivers.cloud_hypervisor import CloudHypervisorDriver

        return CloudHypervisorDriver()
    if name == "vfkit":
        from vmkit.drivers.vfkit import VfkitDriver

        return VfkitDriver()
    if name == "krunkit":
        from vmkit.drivers.vfkit import KrunkitDriver

        return KrunkitDriver()
    if name in PLANNED:
        raise NotSupported(PLANNED[name])
    raise NotSupported(f"unknown driver {name!r}")


def resolve_driver_name(requested: str, arch: str | None = None) -> str:
    """`auto`: QEMU for a guest of another architecture (only it emulates); else vfkit on
    macOS when installed, Cloud Hypervisor when installed and KVM works, else QEMU. Only
    implemented drivers are picked."""
    if requested != "auto":
        return requested
    if foreign_arch(arch):
        return "qemu"
    if is_macos() and shutil.which("vfkit") and "vfkit" not in PLANNED:
        return "vfkit"
    if (
        shutil.which("cloud-hypervisor")
        and kvm_state().usable
        and "cloud-hypervisor" not in PLANNED
    ):
        return "cloud-hypervisor"
    return "qemu"
