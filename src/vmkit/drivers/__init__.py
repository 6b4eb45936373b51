"""The driver registry and driver selection.

Each driver module registers its Driver class (`@register`); `MODULES` says which module
defines which driver, so a lookup imports only that one. Adding a driver is one line here
plus its own module or folder.
"""

from __future__ import annotations

import importlib

from vmkit.errors import InvalidInput, NotSupported

TYPE_CHECKING = False  # not typing's: `vmkit ls` checks driver names here (MODULES)
if TYPE_CHECKING:
    from typing import TypeVar

    from vmkit.drivers.base import Driver
    from vmkit.storage.kernel import KernelInfo

    D = TypeVar("D", bound="type[Driver]")

# driver name -> the module that registers it, in the order `driver: auto` prefers them.
MODULES: dict[str, str] = {
    "vfkit": "vmkit.drivers.vfkit",
    "krunkit": "vmkit.drivers.vfkit",
    "cloud-hypervisor": "vmkit.drivers.cloud_hypervisor",
    "qemu": "vmkit.drivers.qemu",
    "tart": "vmkit.drivers.tart",
}

# What `driver: auto` checks before importing a driver, and the only place these are
# checked: the host platform it runs on and the binary it needs (its `auto_usable()` adds
# the rest, e.g. working KVM). Importing the Mac drivers and Cloud Hypervisor's just to
# hear "no" cost ~10 ms of every `vmkit run` on Linux.
AUTO_PREREQ: dict[str, tuple[str, str]] = {
    "vfkit": ("macos", "vfkit"),
    "krunkit": ("macos", "krunkit"),
    "cloud-hypervisor": ("linux", "cloud-hypervisor"),
    "tart": ("macos", "tart"),
}


def _may_auto_pick(name: str) -> bool:
    import shutil

    from vmkit import hostinfo

    host, binary = AUTO_PREREQ.get(name, ("", ""))
    if (host == "macos" and not hostinfo.is_macos()) or (
        host == "linux" and not hostinfo.is_linux()
    ):
        return False
    return not binary or shutil.which(binary) is not None


_registered: dict[str, type[Driver]] = {}


def register(cls: D) -> D:
    """Class decorator: make `cls` the driver named `cls.name`."""
    _registered[cls.name] = cls
    return cls


def names() -> list[str]:
    """Every driver name, in `driver: auto`'s order of preference."""
    return list(MODULES)


def driver_class(name: str) -> type[Driver]:
    module = MODULES.get(name)
    if module is None:
        raise InvalidInput(
            f"driver: {name!r} is not a driver vmkit has; use auto, {', '.join(MODULES)}"
        )
    importlib.import_module(module)
    return _registered[name]


def get_driver(name: str, arch: str | None = None) -> Driver:
    """The driver `name` for guests of `arch` (None/auto: the host's). Only a driver that
    `emulates` runs another architecture."""
    from vmkit.hostinfo import foreign_arch, machine_arch

    cls = driver_class(name)
    if foreign_arch(arch) and not cls.emulates:
        raise InvalidInput(
            f"arch: {name} runs only {machine_arch()} guests (hardware virtualization); "
            f"use driver: qemu to emulate {arch}"
        )
    return cls(arch=None if arch in (None, "auto") else arch)


def resolve_driver_name(requested: str, arch: str | None = None) -> str:
    """`auto`: for a guest of another architecture the driver that emulates (QEMU); else
    the first driver, in `MODULES` order, whose `auto_usable()` says it runs here (vfkit on
    a Mac that has it, Cloud Hypervisor where it is installed and KVM works, else QEMU)."""
    if requested != "auto":
        driver_class(requested)  # one vmkit has
        return requested
    from vmkit.hostinfo import foreign_arch

    foreign = foreign_arch(arch)
    for name in MODULES:
        if not foreign and not _may_auto_pick(name):
            continue
        cls = driver_class(name)
        if (cls.emulates if foreign else cls.auto_usable()) and cls.auto_pick:
            return name
    raise NotSupported("no driver can run this guest here (see `vmkit doctor`)")


def boot_support(info: KernelInfo) -> dict[str, str]:
    """How each driver can boot the kernel `info` describes ("driver/arch" -> how)."""
    out: dict[str, str] = {}
    for name in MODULES:
        if info.arch is None:
            out[name] = "no: not a kernel vmkit recognises"
        else:
            out.update(driver_class(name).kernel_support(info))
    return out
