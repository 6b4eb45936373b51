"""The spec's boot kinds (a kernel, EFI firmware, macOS, the tiny guest, a Tart VM) and the
`Boot` union that tells them apart by `kind`; `vmkit.spec` re-exports them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, ValidationInfo, field_validator

from vmkit.spec_devices import _Model, _resolve
from vmkit.units import parse_size


class LinuxBoot(_Model):
    """Direct kernel boot: a PVH ELF vmlinux or a bzImage (x86), an Image (arm64)."""

    kind: Literal["linux"] = "linux"
    kernel: Path
    initrd: Path | None = None
    cmdline: str = ""

    @field_validator("kernel", "initrd")
    @classmethod
    def _paths(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else _resolve(v, info)

    @field_validator("cmdline")
    @classmethod
    def _cmdline(cls, v: str) -> str:
        if any(c in v for c in "\r\n\0"):
            raise ValueError("the kernel command line must be one line (no newline or NUL)")
        return v


class EfiBoot(_Model):
    """UEFI firmware boot from the first disk (cloud images). `firmware`: the code image
    to use instead of the one the platform provides (QEMU: its firmware descriptors)."""

    kind: Literal["efi"] = "efi"
    firmware: Path | None = None

    @field_validator("firmware")
    @classmethod
    def _paths(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else _resolve(v, info)


class MacosBoot(_Model):
    """A macOS guest (vfkit on Apple Silicon only): the platform files a macOS installer run
    (e.g. vfkit's or macosvm's) leaves next to the disk image."""

    kind: Literal["macos"] = "macos"
    machine_identifier: Path
    hardware_model: Path
    aux_image: Path

    @field_validator("machine_identifier", "hardware_model", "aux_image")
    @classmethod
    def _paths(cls, v: Path, info: ValidationInfo) -> Path:
        return _resolve(v, info)


class TinyBoot(_Model):
    """vmkit's tiny guest (Debian kernel + busybox initramfs, built on first use), with
    `cmdline` added to the kernel command line and `initrd` instead of its own."""

    kind: Literal["tiny"] = "tiny"
    initrd: Path | None = None
    cmdline: str = ""

    @field_validator("initrd")
    @classmethod
    def _paths(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else _resolve(v, info)

    @field_validator("cmdline")
    @classmethod
    def _cmdline(cls, v: str) -> str:
        return LinuxBoot._cmdline(v)


class TartBoot(_Model):
    """A Tart VM (driver: tart, macOS): cloned from `image` (an OCI reference such as
    ghcr.io/cirruslabs/ubuntu:latest, or a VM already in Tart's store), or, without one,
    an empty Linux VM (`tart create --linux`) of `disk_size` to install from an ISO."""

    kind: Literal["tart"] = "tart"
    image: str | None = None
    disk_size: int | None = Field(default=None, description="grow the VM's own disk to this")

    @field_validator("disk_size", mode="before")
    @classmethod
    def _disk_size(cls, v: Any) -> int | None:
        if v is None:
            return None
        n = parse_size(v)
        if n <= 0 or n % (1 << 30):
            raise ValueError(f"{v!r}: Tart sizes disks in whole GiB (e.g. 50G)")
        return n


def _boot_kind(v: Any) -> str:
    if isinstance(v, dict):
        return str(v.get("kind", "linux"))
    return str(getattr(v, "kind", "linux"))


Boot = Annotated[
    Annotated[LinuxBoot, Tag("linux")]
    | Annotated[EfiBoot, Tag("efi")]
    | Annotated[MacosBoot, Tag("macos")]
    | Annotated[TinyBoot, Tag("tiny")]
    | Annotated[TartBoot, Tag("tart")],
    Discriminator(_boot_kind),
]
