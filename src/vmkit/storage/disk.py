"""Disk images: create, inspect, convert and grow raw and qcow2 files.

Raw images are made sparse by vmkit itself; qcow2 work goes through `qemu-img` (Debian's
qemu-utils), the reference implementation of the format.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vmkit.errors import InvalidInput, VmkitError

QCOW2_MAGIC = b"QFI\xfb"
FORMATS = ("raw", "qcow2")
_PROGRESS_RE = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


@dataclass(frozen=True)
class DiskInfo:
    path: str
    format: str
    virtual_size: int
    allocated: int
    backing_file: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def qemu_img() -> str:
    found = shutil.which("qemu-img")
    if not found:
        raise VmkitError(
            "qemu-img not found: install it (Debian/Ubuntu: `apt-get install qemu-utils`; "
            "macOS: `brew install qemu`)"
        )
    return found


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VmkitError(f"{Path(argv[0]).name} failed: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout


def sniff_format(path: Path) -> str:
    with path.open("rb") as f:
        return "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"


def create(path: Path, size: int, fmt: str = "raw") -> DiskInfo:
    """A new empty disk (sparse raw, or qcow2). Refuses to overwrite anything."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format {fmt!r}: use raw or qcow2")
    if size <= 0 or size % 512:
        raise InvalidInput(f"size {size} must be a positive multiple of 512 bytes")
    if path.exists():
        raise InvalidInput(f"{str(path)!r} already exists; vmkit never overwrites a disk")
    if not path.parent.is_dir():
        raise InvalidInput(f"folder {str(path.parent)!r} does not exist")
    if fmt == "raw":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
    else:
        try:
            _run([qemu_img(), "create", "-q", "-f", "qcow2", str(path), str(size)])
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        os.chmod(path, 0o600)
    return info(path)


def info(path: Path) -> DiskInfo:
    if not path.is_file():
        raise InvalidInput(f"disk {str(path)!r} does not exist")
    if sniff_format(path) == "raw":
        st = path.stat()
        return DiskInfo(str(path), "raw", st.st_size, st.st_blocks * 512, None)
    data = json.loads(_run([qemu_img(), "info", "--output=json", "-U", str(path)]))
    return DiskInfo(
        str(path),
        str(data["format"]),
        int(data["virtual-size"]),
        int(data.get("actual-size", 0)),
        data.get("full-backing-filename") or data.get("backing-filename"),
    )


def convert(
    src: Path,
    dst: Path,
    fmt: str,
    progress: Callable[[float], None] = lambda _pct: None,
) -> DiskInfo:
    """Copy `src` into a new `dst` of format `fmt` (sparse), reporting percent done."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format {fmt!r}: use raw or qcow2")
    if dst.exists():
        raise InvalidInput(f"{str(dst)!r} already exists; vmkit never overwrites a disk")
    src_fmt = info(src).format
    argv = [qemu_img(), "convert", "-p", "-f", src_fmt, "-O", fmt, str(src), str(dst)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    buf = b""
    try:
        while chunk := os.read(proc.stdout.fileno(), 4096):
            buf = (buf + chunk)[-256:]
            for m in _PROGRESS_RE.finditer(chunk):
                progress(float(m.group(1)))
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise VmkitError(f"qemu-img convert failed: {err.strip()}")
    except BaseException:
        proc.kill()
        proc.wait()
        dst.unlink(missing_ok=True)
        raise
    os.chmod(dst, 0o600)
    progress(100.0)
    return info(dst)


def resize(path: Path, size: int) -> DiskInfo:
    """Grow a disk to `size` bytes (never shrinks: that would cut the guest's filesystem)."""
    current = info(path)
    if size < current.virtual_size:
        raise InvalidInput(
            f"{str(path)!r} is {current.virtual_size} bytes; vmkit only grows disks "
            "(shrinking would cut off the guest's data)"
        )
    if size % 512:
        raise InvalidInput(f"size {size} must be a multiple of 512 bytes")
    if current.format == "raw":
        with path.open("r+b") as f:
            f.truncate(size)
    else:
        _run([qemu_img(), "resize", "-q", "-f", "qcow2", str(path), str(size)])
    return info(path)


def overlay(base: Path, dst: Path) -> None:
    """A qcow2 file whose unwritten blocks read from `base` (which must never change)."""
    _run(
        [
            qemu_img(),
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            sniff_format(base),
            "-b",
            str(base.absolute()),
            str(dst),
        ]
    )
    os.chmod(dst, 0o600)
