"""macOS host facts for `vmkit doctor`: Apple Silicon or Intel, the macOS version, which of
vfkit/krunkit/Tart is installed (and its version), and what each enables here.

The only place that knows macOS version thresholds; `doctor` calls it on macOS. Everything
is injectable so it is tested on Linux too.
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Callable
from typing import Any

from vmkit.drivers.vmm_version import format_version, installed_version

MAC_DRIVERS = ("vfkit", "krunkit", "tart")


def _macos_version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(".") if p)
    except ValueError:
        return ()


def doctor_facts(
    macos: str | None = None,
    machine: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> dict[str, Any]:
    macos = platform.mac_ver()[0] if macos is None else macos
    machine = (platform.machine() if machine is None else machine).lower()
    apple_silicon = machine in ("arm64", "aarch64")
    ver = _macos_version(macos)
    facts: dict[str, Any] = {
        "macos": macos or "unknown",
        "cpu": "Apple Silicon" if apple_silicon else "Intel",
        "fixes": [],
    }
    for name in MAC_DRIVERS:
        path = which(name)
        version = installed_version(path) if path else None
        facts[name] = {
            "path": path,
            "version": format_version(version) if version else None,
            "enables": _enables(name, apple_silicon, ver),
        }
    usable_krunkit = apple_silicon and ver >= (14,)
    if not facts["vfkit"]["path"]:
        facts["fixes"].append("install vfkit for the vfkit driver: `brew install vfkit`")
    if not facts["krunkit"]["path"] and usable_krunkit:
        facts["fixes"].append(
            "optional, for GPU guests: `brew tap slp/krunkit && brew install krunkit`"
        )
    facts["driver_auto"] = "vfkit" if facts["vfkit"]["path"] else "qemu (hvf)"
    return facts


def _enables(name: str, apple_silicon: bool, ver: tuple[int, ...]) -> list[str]:
    if name == "tart":
        from vmkit.drivers.tart.driver import LICENCE

        if not apple_silicon:
            return ["nothing here: Tart needs an Apple silicon Mac"]
        return ["Linux and macOS VMs cloned from OCI images (driver: tart)", LICENCE]
    if name == "krunkit":
        if not apple_silicon or ver < (14,):
            return ["nothing here: krunkit needs Apple Silicon and macOS 14+"]
        return [
            "EFI boot of raw or qcow2 disk images",
            "GPU acceleration in the guest (virtio-gpu, Venus)",
        ]
    out = ["Linux guests by direct kernel boot (kernel + initrd)"]
    if apple_silicon:
        out.append("arm64 guests only (vmkit unpacks compressed and EFI zboot kernels)")
        out.append("Rosetta for x86_64 binaries in arm64 Linux guests")
    if ver >= (13,):
        out.append("EFI boot from a disk image")
    if apple_silicon and ver >= (15,):
        out.append("nested virtualization (M3 or newer)")
    return out
