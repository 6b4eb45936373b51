"""Just enough ELF64 parsing to read sections and notes (kernel modules, PVH kernels).

Stdlib-only on purpose: it runs at guest-build time on machines without binutils.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
PT_NOTE = 4


class ElfError(ValueError):
    """The bytes are not a little-endian ELF64 file we can read."""


@dataclass(frozen=True)
class Section:
    name: str
    offset: int
    size: int


def _check(data: bytes) -> None:
    if data[:4] != ELF_MAGIC:
        raise ElfError("not an ELF file (bad magic)")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("only little-endian ELF64 is supported")


def sections(data: bytes) -> list[Section]:
    """The section table of an ELF64 LE file, with names resolved."""
    try:
        return _sections(data)
    except (struct.error, ValueError) as exc:
        if isinstance(exc, ElfError):
            raise
        raise ElfError(f"truncated or corrupt ELF: {exc}") from None


def _sections(data: bytes) -> list[Section]:
    _check(data)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = []
    for i in range(shnum):
        base = shoff + i * shentsize
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, base)
        raw.append((name, offset, size))
    if not raw or shstrndx >= len(raw):
        return []
    str_off = raw[shstrndx][1]
    out = []
    for name_off, offset, size in raw:
        end = data.index(b"\0", str_off + name_off)
        out.append(Section(data[str_off + name_off : end].decode(), offset, size))
    return out


def section_bytes(data: bytes, name: str) -> bytes | None:
    for s in sections(data):
        if s.name == name:
            return data[s.offset : s.offset + s.size]
    return None


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The `.modinfo` key=value strings of a kernel module (keys may repeat)."""
    blob = section_bytes(data, ".modinfo") or b""
    info: dict[str, list[str]] = {}
    for entry in blob.split(b"\0"):
        if b"=" in entry:
            key, _, value = entry.decode(errors="replace").partition("=")
            info.setdefault(key, []).append(value)
    return info


def notes(data: bytes) -> Iterator[tuple[str, int, bytes]]:
    """(owner name, type, descriptor) for every note in PT_NOTE segments."""
    try:
        yield from _notes(data)
    except struct.error as exc:
        raise ElfError(f"truncated or corrupt ELF: {exc}") from None


def _notes(data: bytes) -> Iterator[tuple[str, int, bytes]]:
    _check(data)
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type != PT_NOTE:
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            pos += 12
            name = data[pos : pos + namesz].rstrip(b"\0").decode(errors="replace")
            pos += (namesz + 3) & ~3
            desc = data[pos : pos + descsz]
            pos += (descsz + 3) & ~3
            yield name, ntype, desc
