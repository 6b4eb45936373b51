"""Disk images: create, inspect, convert and grow raw and qcow2 files.

Raw images are made sparse by vmkit itself; qcow2 work goes through `qemu-img` (Debian's
qemu-utils), the reference implementation of the format.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vmkit.errors import InvalidInput, VmkitError
from vmkit.imagefmt import QCOW2_MAGIC as QCOW2_MAGIC
from vmkit.imagefmt import sniff_format as sniff_format

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


def backing_file(path: Path) -> Path | None:
    """The backing file a qcow2 image names in its header (None for raw or no backing).

    Read straight from the header (cheap: no qemu-img per file) so vmkit can find every
    overlay that depends on an image before it is deleted. A relative name is relative to
    the overlay's folder, as QEMU reads it."""
    try:
        with path.open("rb") as f:
            header = f.read(20)
            if len(header) < 20 or header[:4] != QCOW2_MAGIC:
                return None
            offset, size = struct.unpack(">QI", header[8:20])
            if offset == 0 or size == 0 or size > 4096:
                return None
            f.seek(offset)
            name = f.read(size).decode(errors="surrogateescape")
    except OSError:
        return None
    if "://" in name or name.startswith(("json:", "nbd:")):
        return None  # not a local file
    backing = Path(name)
    return backing if backing.is_absolute() else path.parent / backing


def pin_backing(copy: Path, original: Path) -> None:
    """After copying the qcow2 `original` elsewhere, make `copy` name the same backing file:
    a relative backing name in the header would now resolve next to the copy. Rewrites
    the header only (`qemu-img rebase -u`); the data is untouched."""
    with copy.open("rb") as f:
        header = f.read(20)
    if header[:4] != QCOW2_MAGIC:
        return
    offset, size = struct.unpack(">QI", header[8:20])
    if offset == 0 or size == 0:
        return
    with copy.open("rb") as f:
        f.seek(offset)
        name = f.read(size).decode(errors="surrogateescape")
    if Path(name).is_absolute() or "://" in name or name.startswith(("json:", "nbd:")):
        return
    backing = backing_file(original)
    if backing is None:
        return
    data = json.loads(_run([qemu_img(), "info", "--output=json", "-U", str(original)]))
    fmt = data.get("backing-filename-format") or sniff_format(backing)
    _run([qemu_img(), "rebase", "-u", "-F", fmt, "-b", str(backing.absolute()), str(copy)])


def overlays_of(bases: list[Path], roots: list[Path]) -> list[Path]:
    """qcow2 files under `roots` whose backing file is one of `bases`: the overlays that
    would break if a base were deleted or rewritten."""
    wanted = {b.resolve() for b in bases}
    found = []
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                path = Path(folder) / name
                backing = backing_file(path)
                if backing is not None and backing.resolve() in wanted:
                    found.append(path)
    return sorted(found)


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
    """Copy `src` into a new `dst` of format `fmt` (sparse), reporting percent done.

    qemu-img writes a hidden temp file beside `dst`, renamed into place only when complete,
    so a failed or interrupted conversion never leaves a half-written `dst`."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format {fmt!r}: use raw or qcow2")
    if dst.exists():
        raise InvalidInput(f"{str(dst)!r} already exists; vmkit never overwrites a disk")
    if not dst.parent.is_dir():
        raise InvalidInput(f"folder {str(dst.parent)!r} does not exist")
    src_fmt = info(src).format
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    argv = [qemu_img(), "convert", "-p", "-f", src_fmt, "-O", fmt, str(src), str(tmp)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    buf = b""
    try:
        while chunk := os.read(proc.stdout.fileno(), 4096):
            buf += chunk  # a progress token may be split across reads
            *done_tokens, buf = buf.split(b"\r")
            for token in done_tokens:
                m = _PROGRESS_RE.search(token)
                if m:
                    progress(float(m.group(1)))
            buf = buf[-256:]
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise VmkitError(f"qemu-img convert {src} failed: {err.strip()}")
        os.chmod(tmp, 0o600)
        os.rename(tmp, dst)
    except BaseException:
        proc.kill()
        proc.wait()
        tmp.unlink(missing_ok=True)
        raise
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
