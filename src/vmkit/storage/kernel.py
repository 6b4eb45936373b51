"""Kernel image formats: tell a bzImage from an ELF vmlinux, extract the PVH vmlinux.

A PVH-capable ELF `vmlinux` boots directly under QEMU and Cloud Hypervisor and skips
the bzImage decompressor (2.8 s vs 6.5 s to ready under TCG on the reference machine).
"""

from __future__ import annotations

import gzip
import lzma
from enum import StrEnum
from pathlib import Path

from vmkit.storage import elf

XEN_ELFNOTE_PHYS32_ENTRY = 0x12
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b\x08"


class KernelFormat(StrEnum):
    ELF_PVH = "elf-pvh"
    ELF = "elf"
    BZIMAGE = "bzimage"
    UNKNOWN = "unknown"


class KernelFormatError(ValueError):
    pass


def is_bzimage(data: bytes) -> bool:
    return len(data) > 0x206 and data[0x202:0x206] == b"HdrS"


def has_pvh_note(data: bytes) -> bool:
    return any(
        name == "Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY for name, ntype, _ in elf.notes(data)
    )


def detect(path: Path) -> KernelFormat:
    data = path.read_bytes()
    if data[:4] == elf.ELF_MAGIC:
        try:
            return KernelFormat.ELF_PVH if has_pvh_note(data) else KernelFormat.ELF
        except (elf.ElfError, IndexError, ValueError):
            return KernelFormat.UNKNOWN
    if is_bzimage(data):
        return KernelFormat.BZIMAGE
    return KernelFormat.UNKNOWN


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF vmlinux embedded (compressed) in a bzImage; xz and gzip payloads."""
    if not is_bzimage(bzimage):
        raise KernelFormatError("not a bzImage (no 'HdrS' setup header)")
    for magic, decompress in ((_XZ_MAGIC, _unxz), (_GZIP_MAGIC, _gunzip)):
        start = bzimage.find(magic)
        while start != -1:
            try:
                out = decompress(bzimage[start:])
            except (lzma.LZMAError, OSError, EOFError, gzip.zlib.error):  # type: ignore[attr-defined]
                out = b""
            if out[:4] == elf.ELF_MAGIC:
                return out
            start = bzimage.find(magic, start + 1)
    raise KernelFormatError(
        "no xz- or gzip-compressed ELF vmlinux found inside the bzImage "
        "(zstd/lz4 payloads are not supported yet)"
    )


def _unxz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _gunzip(data: bytes) -> bytes:
    d = gzip.zlib.decompressobj(16 + gzip.zlib.MAX_WBITS)  # type: ignore[attr-defined]
    return bytes(d.decompress(data))
