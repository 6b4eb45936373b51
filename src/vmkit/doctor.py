"""`vmkit doctor`'s facts: what this host can run. Binaries are looked up by the drivers
themselves (`Driver.find_binary`, which honours e.g. VMKIT_CLOUD_HYPERVISOR), so doctor
says what `vmkit start` would find."""

from __future__ import annotations

import os
import shutil
from typing import Any

from vmkit import __version__, hostinfo


def _binary(driver: str) -> str | None:
    from vmkit.drivers import get_driver
    from vmkit.errors import VmkitError

    try:
        return get_driver(driver).find_binary()
    except VmkitError:
        return None


def _virtiofsd() -> str | None:
    from vmkit.errors import VmkitError
    from vmkit.shares.virtiofsd import find

    try:
        return find()
    except VmkitError:
        return None


def _uefi_firmware(arch: str) -> str | None:
    """The UEFI code image QEMU would load for `boot.kind: efi` (None: not installed)."""
    from vmkit.drivers.qemu_firmware import find_uefi
    from vmkit.errors import NotFound

    try:
        return str(find_uefi(arch).code)
    except NotFound:
        return None


def facts() -> dict[str, Any]:
    from vmkit.drivers.qemu.driver import vhost_vsock_device
    from vmkit.guest.build import find_built
    from vmkit.paths import data_home, runtime_dir

    kvm = hostinfo.kvm_state()
    arch = hostinfo.machine_arch()
    guest = find_built()
    out: dict[str, Any] = {
        "vmkit": __version__,
        "arch": arch,
        "kvm_usable": kvm.usable,
        "kvm": kvm.reason,
        "kvm_pvm": hostinfo.kvm_pvm_loaded(),
        "accelerator_auto": hostinfo.resolve_accelerator("auto"),
        "qemu": _binary("qemu"),
        "qemu_emulates": [  # arch: values this host can run emulated (TCG)
            a for a in ("x86_64", "aarch64") if a != arch and shutil.which(f"qemu-system-{a}")
        ],
        "cloud_hypervisor": _binary("cloud-hypervisor"),
        "vfkit": _binary("vfkit"),
        "virtiofsd": _virtiofsd(),
        "vhost_vsock": os.path.exists(vhost_vsock_device()),  # QEMU's vsock_cid needs it
        "qemu_img": shutil.which("qemu-img"),
        "data_home": str(data_home()),
        "runtime_dir": str(runtime_dir()),
        "tiny_guest": str(guest.dir) if guest else None,
        "uefi_firmware": _uefi_firmware(arch),
    }
    if hostinfo.is_macos():
        from vmkit.macos_host import doctor_facts

        out["macos"] = doctor_facts()
    return out
