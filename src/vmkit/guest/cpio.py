"""A deterministic newc cpio writer (what the kernel unpacks as an initramfs).

Fixed mtimes, uid/gid 0 and sorted entries make the archive byte-for-byte reproducible.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    path: str  # without leading "/"
    mode: int  # full st_mode (type bits included)
    data: bytes = b""


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def chardev(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    # rdev is carried in the data field's place by the writer below
    return Entry(path, stat.S_IFCHR | perm, f"{major}:{minor}".encode())


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def write(entries: list[Entry], mtime: int = 0) -> bytes:
    out = bytearray()
    for ino, entry in enumerate(sorted(entries, key=lambda e: e.path), start=1):
        rdevmajor = rdevminor = 0
        data = entry.data
        if stat.S_ISCHR(entry.mode):
            major, minor = data.decode().split(":")
            rdevmajor, rdevminor, data = int(major), int(minor), b""
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out += _header(ino, entry.mode, nlink, mtime, len(data), rdevmajor, rdevminor, entry.path)
        out += data + _pad(len(data))
    out += _header(0, 0, 1, 0, 0, 0, 0, "TRAILER!!!")
    return bytes(out)


def _header(
    ino: int, mode: int, nlink: int, mtime: int, size: int, rmaj: int, rmin: int, name: str
) -> bytes:
    raw_name = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, nlink, mtime, size, 0, 0, rmaj, rmin, len(raw_name), 0]
    head = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    return head + raw_name + _pad(len(head) + len(raw_name))
