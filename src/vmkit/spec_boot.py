"""The spec's boot kinds (a kernel, EFI firmware, macOS, the tiny guest, a Tart VM) and the
`BOOT` converter that tells them apart by `kind`; `vmkit.spec` re-exports them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from vmkit.record import STR, Maybe, Record, Tagged, conv, field, literal, then
from vmkit.spec_devices import OPT_PATH, RESOLVED_PATH, SIZE_SCHEMA
from vmkit.units import parse_size


def _one_line(v: str) -> str:
    if any(c in v for c in "\r\n\0"):
        raise ValueError("the kernel command line must be one line (no newline or NUL)")
    return v


CMDLINE = then(STR, _one_line)


class LinuxBoot(Record):
    """Direct kernel boot: a PVH ELF vmlinux or a bzImage (x86), an Image (arm64)."""

    kind: Literal["linux"] = field(literal(Literal["linux"]), default="linux")
    kernel: Path = field(RESOLVED_PATH)
    initrd: Path | None = field(OPT_PATH, default=None)
    cmdline: str = field(CMDLINE, default="")


class EfiBoot(Record):
    """UEFI firmware boot from the first disk (cloud images). `firmware`: the code image
    to use instead of the one the platform provides (QEMU: its firmware descriptors)."""

    kind: Literal["efi"] = field(literal(Literal["efi"]), default="efi")
    firmware: Path | None = field(OPT_PATH, default=None)


class MacosBoot(Record):
    """A macOS guest (vfkit on Apple Silicon only): the platform files a macOS installer run
    (e.g. vfkit's or macosvm's) leaves next to the disk image."""

    kind: Literal["macos"] = field(literal(Literal["macos"]), default="macos")
    machine_identifier: Path = field(RESOLVED_PATH)
    hardware_model: Path = field(RESOLVED_PATH)
    aux_image: Path = field(RESOLVED_PATH)


class TinyBoot(Record):
    """vmkit's tiny guest (Debian kernel + busybox initramfs, built on first use), with
    `cmdline` added to the kernel command line and `initrd` instead of its own."""

    kind: Literal["tiny"] = field(literal(Literal["tiny"]), default="tiny")
    initrd: Path | None = field(OPT_PATH, default=None)
    cmdline: str = field(CMDLINE, default="")


def _tart_disk(v: Any) -> int:
    n = parse_size(v)
    if n <= 0 or n % (1 << 30):
        raise ValueError(f"{v!r}: Tart sizes disks in whole GiB (e.g. 50G)")
    return n


class TartBoot(Record):
    """A Tart VM (driver: tart, macOS): cloned from `image` (an OCI reference such as
    ghcr.io/cirruslabs/ubuntu:latest, or a VM already in Tart's store), or, without one,
    an empty Linux VM (`tart create --linux`) of `disk_size` to install from an ISO."""

    kind: Literal["tart"] = field(literal(Literal["tart"]), default="tart")
    image: str | None = field(Maybe(STR), default=None)
    disk_size: int | None = field(
        Maybe(conv(_tart_disk, dict(SIZE_SCHEMA))),
        default=None,
        doc="grow the VM's own disk to this",
    )


Boot = LinuxBoot | EfiBoot | MacosBoot | TinyBoot | TartBoot
BOOT = Tagged(
    "kind",
    "linux",
    {"linux": LinuxBoot, "efi": EfiBoot, "macos": MacosBoot, "tiny": TinyBoot, "tart": TartBoot},
    "a boot kind",
)
