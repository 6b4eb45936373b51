"""Copy-on-write clones of disk images with the best method the platform has.

Order: an O(1) clone that shares every extent (Linux FICLONE on btrfs/xfs/bcachefs, macOS
APFS clonefile); else, when the caller's VMM reads qcow2 and the source will not change, a
qcow2 overlay backed by the source (also O(1)); else a sparse copy that walks data extents
with SEEK_DATA/SEEK_HOLE, so it costs the allocated size, not the virtual size. The sparse
copy moves bytes in the kernel (copy_file_range) and falls back to pread/pwrite where that
cannot work (across filesystems, or on macOS). The method used is always reported.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Any

from vmkit.errors import VmkitError
from vmkit.plain import Frozen

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_CHUNK = 1 << 20
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}
# copy_file_range refuses these pairs of files (another filesystem, a filesystem without it)
_NO_CFR = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


class CloneResult(Frozen):
    _fields = ("method", "seconds", "bytes_copied")
    __slots__ = _fields

    def __init__(self, method: str, seconds: float, bytes_copied: int):
        self.method = method  # reflink | clonefile (macOS) | qcow2-overlay | sparse-copy
        self.seconds = seconds
        self.bytes_copied = bytes_copied  # 0 for a reflink

    def to_json(self) -> dict[str, Any]:
        return self.as_dict()


def _reflink(src_fd: int, dst_fd: int) -> bool:
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise
    return True


def _copy_range(src_fd: int, dst_fd: int, offset: int, end: int, in_kernel: list[bool]) -> int:
    """Copy [offset, end) to the same offset in dst; `in_kernel[0]` turns False (for the
    rest of the copy) when copy_file_range cannot serve this pair of files."""
    start = offset
    while offset < end:
        n = 0
        if in_kernel[0]:
            try:
                n = os.copy_file_range(
                    src_fd, dst_fd, min(_CHUNK * 64, end - offset), offset, offset
                )
            except OSError as exc:
                if exc.errno not in _NO_CFR:
                    raise
                in_kernel[0] = False
                continue
        else:
            data = os.pread(src_fd, min(_CHUNK * 8, end - offset), offset)
            view = memoryview(data)
            while view:
                written = os.pwrite(dst_fd, view, offset + len(data) - len(view))
                view = view[written:]
            n = len(data)
        if n == 0:  # the source shrank under us
            break
        offset += n
    return offset - start


def _copy_skipping_zeros(src_fd: int, dst_fd: int, size: int) -> int:
    """For filesystems without SEEK_DATA: read everything, write only non-zero blocks."""
    copied = 0
    zero = bytes(_CHUNK)
    for offset in range(0, size, _CHUNK):
        block = os.pread(src_fd, _CHUNK, offset)
        if block != zero[: len(block)]:
            os.pwrite(dst_fd, block, offset)
            copied += len(block)
    os.ftruncate(dst_fd, size)
    return copied


def _sparse_copy(src_fd: int, dst_fd: int, size: int) -> int:
    """Copy only the data extents; holes stay holes. Returns bytes copied."""
    copied = 0
    pos = 0
    in_kernel = [hasattr(os, "copy_file_range")]  # Linux only
    while pos < size:
        try:
            data = os.lseek(src_fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP) and pos == 0:
                return _copy_skipping_zeros(src_fd, dst_fd, size)  # no SEEK_DATA here
            raise
        hole = os.lseek(src_fd, data, os.SEEK_HOLE)
        copied += _copy_range(src_fd, dst_fd, data, hole, in_kernel)
        pos = hole
    os.ftruncate(dst_fd, size)
    return copied


def _can_reflink(src: Path, folder: Path) -> bool:
    """Whether a reflink of `src` into `folder` works (tried on an empty probe file)."""
    probe = folder / f".reflink-probe-{os.getpid()}"
    try:
        src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        dst_fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            return _reflink(src_fd, dst_fd)
        finally:
            os.close(dst_fd)
            probe.unlink(missing_ok=True)
    finally:
        os.close(src_fd)


def clone_file(src: Path, dst: Path, *, allow_overlay: bool = False) -> CloneResult:
    """Clone `src` to the new file `dst` (which must not exist); mode 0600.

    An APFS clonefile (macOS) or a reflink (Linux) when the filesystem can; else, with
    `allow_overlay` (the VMM reads qcow2 and `src` will never change), a qcow2 overlay
    backed by `src`; else a sparse copy. The result says which. A copied qcow2 overlay keeps
    finding its backing file. On any error the half-written `dst` is removed.
    """
    t0 = time.monotonic()
    from vmkit.storage import apfs

    if apfs.available():
        if dst.exists():
            raise VmkitError(f"cannot clone {src} to {dst}: the target exists")
        if apfs.clonefile(src, dst):
            _keep_backing(src, dst)
            return CloneResult("clonefile", round(time.monotonic() - t0, 4), 0)
    if allow_overlay and not _can_reflink(src, dst.parent):
        from vmkit.storage.disk import overlay

        if dst.exists():
            raise VmkitError(f"cannot clone {src} to {dst}: the target exists")
        try:
            overlay(src, dst)
        except BaseException:
            dst.unlink(missing_ok=True)
            raise
        return CloneResult("qcow2-overlay", round(time.monotonic() - t0, 4), 0)
    src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise VmkitError(f"cannot clone {src} to {dst}: the target exists") from None
        try:
            if _reflink(src_fd, dst_fd):
                method, copied = "reflink", 0
            else:
                method = "sparse-copy"
                copied = _sparse_copy(src_fd, dst_fd, os.fstat(src_fd).st_size)
            os.fsync(dst_fd)
        except BaseException:
            os.close(dst_fd)
            dst.unlink(missing_ok=True)
            raise
        os.close(dst_fd)
    finally:
        os.close(src_fd)
    _keep_backing(src, dst)
    return CloneResult(method, round(time.monotonic() - t0, 4), copied)


def _keep_backing(src: Path, dst: Path) -> None:
    """A copied qcow2 overlay whose header names its backing file relatively would look
    for it next to the copy: pin the name to where the original's backing file is."""
    from vmkit.imagefmt import sniff_format

    if sniff_format(dst) != "qcow2":
        return
    from vmkit.storage.disk import pin_backing  # here: it loads dataclasses

    try:
        pin_backing(dst, src)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
