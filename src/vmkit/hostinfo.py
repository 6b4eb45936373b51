"""Host facts that decide defaults: OS, CPU arch, whether KVM really works.

The only module that asks "which platform is this"; drivers and `doctor` ask it.
"""

from __future__ import annotations

import fcntl
import os
import sys
from functools import cache
from pathlib import Path

from vmkit.plain import Frozen

KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12


def is_macos() -> bool:
    return sys.platform == "darwin"


def is_linux() -> bool:
    return sys.platform.startswith("linux")


def machine_arch() -> str:
    """x86_64 or aarch64 (QEMU's names)."""
    m = os.uname().machine.lower()  # platform.machine(), without importing platform
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def kvm_pvm_loaded() -> bool:
    """`kvm_pvm` is a paravirtual nested KVM that hangs ordinary guest kernels."""
    return Path("/sys/module/kvm_pvm").exists()


class KvmState(Frozen):
    _fields = ("usable", "reason")
    __slots__ = _fields

    def __init__(self, usable: bool, reason: str):
        self.usable, self.reason = usable, reason


@cache
def kvm_state() -> KvmState:
    """Whether /dev/kvm can run an ordinary guest, and why not if it cannot."""
    if not is_linux():
        return KvmState(False, "KVM exists only on Linux")
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return KvmState(False, "/dev/kvm does not exist (no hardware virtualization or module)")
    except PermissionError:
        return KvmState(False, "/dev/kvm is not accessible: add your user to the 'kvm' group")
    except OSError as exc:
        return KvmState(False, f"/dev/kvm cannot be opened: {exc.strerror}")
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as exc:
        return KvmState(False, f"/dev/kvm does not answer KVM_GET_API_VERSION: {exc.strerror}")
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return KvmState(False, f"/dev/kvm reports API version {version}, expected 12")
    if kvm_pvm_loaded():
        return KvmState(
            False,
            "KVM here is kvm_pvm (paravirtual nested KVM): it runs only PVM guest kernels and "
            "hangs ordinary ones",
        )
    return KvmState(True, "/dev/kvm works")


def accel_hint(accelerator: str) -> str | None:
    """A hint for a VM that never became ready, when the accelerator is the likely cause."""
    if accelerator == "kvm" and not kvm_state().usable:
        return f"{kvm_state().reason}. Try `--accel tcg` (software emulation, slower but works)."
    return None


def foreign_arch(arch: str | None) -> bool:
    """A guest architecture other than the host's (emulated: TCG only)."""
    return arch not in (None, "auto", machine_arch())


def resolve_accelerator(requested: str, guest_arch: str | None = None) -> str:
    """`auto` -> kvm when it works, hvf on macOS, else tcg; always tcg for a guest of
    another architecture (hardware virtualization runs only the host's)."""
    if foreign_arch(guest_arch):
        return "tcg"
    if requested != "auto":
        return requested
    if is_macos():
        return "hvf"
    return "kvm" if kvm_state().usable else "tcg"
