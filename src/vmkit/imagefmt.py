"""Telling a qcow2 image from a raw one, and a kernel from any other file, by first bytes."""

from __future__ import annotations

from pathlib import Path

QCOW2_MAGIC = b"QFI\xfb"


def sniff_format(path: Path) -> str:
    """ "qcow2" when the file starts with qcow2's magic, else "raw" (OSError if unreadable)."""
    with path.open("rb") as f:
        return "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"


# What a bootable kernel file starts with (vmkit.storage.kernel tells them apart in detail).
_KERNEL_HEADS = (
    (0, b"\x7fELF"),  # vmlinux
    (0x202, b"HdrS"),  # x86 bzImage setup header
    (0x38, b"ARM\x64"),  # arm64 Image
    (4, b"zimg"),  # EFI zboot
    (0, b"\x1f\x8b\x08"),  # gzip
    (0, b"\xfd7zXZ\x00"),  # xz
    (0, b"\x28\xb5\x2f\xfd"),  # zstd
    (0, b"\x02\x21\x4c\x18"),  # lz4 legacy
    (0, b"BZh"),  # bzip2
    (0, b"\x04\x22\x4d\x18"),  # lz4 frame
)


def looks_like_kernel(head: bytes) -> bool:
    """Whether the first 4 KiB of a file start like a kernel image or a compressed one."""
    return any(head[at : at + len(magic)] == magic for at, magic in _KERNEL_HEADS)
