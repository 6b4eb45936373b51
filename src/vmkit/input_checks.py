"""Checks of what a spec points the VMM at, made at create (and again at start).

The VMM opens these files with the user's rights, so a shared spec must not be able to make
it write where the user did not mean: a read-write disk that is a device, someone else's file
or a system file (a symlink to /etc/shadow), a serial log that overwrites an existing file.
Values that cannot work (a non-kernel file as kernel, more memory than the host has, one host
port published twice) are refused here too, rather than as a failed start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SYSTEM_DIRS = tuple(
    Path(p)
    for p in ("/etc", "/usr", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/var/lib",
              "/var/log", "/proc", "/sys", "/dev", "/root/.ssh")
)  # fmt: skip
KERNEL_HEAD = 4096
LOG_FIX = (
    "name a new file in a folder of your own, or leave serial_log unset (the VM's folder "
    "keeps serial.log)"
)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISBLK, "block device"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "directory"),
    ):
        if test(mode):
            return name
    return "file"


def disk_problem(path: Path, readonly: bool, force: bool) -> str | None:
    """Why `path` may not be a disk without `force`, or None (a missing file is not ours to
    report: the spec check says so)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{str(path)!r} cannot be used: {exc.strerror}"
    if force:
        return None
    hint = "if you mean it, set `force: true` on this disk (`vmkit disk add --force`)"
    kind = _kind(st.st_mode)
    if kind != "file":
        return f"{str(path)!r} is a {kind}, not a disk image file; {hint}"
    if st.st_uid != os.getuid():
        return f"{str(path)!r} belongs to uid {st.st_uid}, not to you; {hint}"
    if not readonly:
        if st.st_nlink > 1:
            return (
                f"{str(path)!r} has {st.st_nlink} hard links: the guest would write into every "
                f"one of them; {hint}"
            )
        real = path.resolve()
        if any(real == d or d in real.parents for d in SYSTEM_DIRS):
            return f"{str(path)!r} is the system file {str(real)!r}; {hint}"
    return None


def serial_log_problem(path: Path, creating: bool) -> str | None:
    """The serial log is truncated and filled with guest-controlled bytes at each start: it
    must be a new file (at create) in a folder only the user can write, and at start still a
    plain file of the user's with no other link."""
    parent = path.parent
    try:
        pst = parent.stat()
    except OSError:
        return f"folder {str(parent)!r} does not exist"
    if not stat.S_ISDIR(pst.st_mode):
        return f"{str(parent)!r} is not a folder"
    if pst.st_uid != os.getuid() or stat.S_IMODE(pst.st_mode) & 0o022:
        return (
            f"folder {str(parent)!r} is not yours alone (owner uid {pst.st_uid}, mode "
            f"{stat.S_IMODE(pst.st_mode):o}); {LOG_FIX}"
        )
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{str(path)!r} cannot be used: {exc.strerror}"
    if creating:
        return f"{str(path)!r} exists and vmkit would overwrite it; {LOG_FIX}"
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_nlink > 1:
        return f"{str(path)!r} is no longer a plain file of yours (replaced?); {LOG_FIX}"
    return None


def kernel_problem(path: Path) -> str | None:
    """None if the file starts like a kernel vmkit can boot (or does not exist/is unreadable:
    reported elsewhere)."""
    from vmkit.imagefmt import looks_like_kernel

    try:
        with path.open("rb") as f:
            head = f.read(KERNEL_HEAD)
    except OSError:
        return None
    if looks_like_kernel(head):
        return None
    return (
        f"{str(path)!r} is not a Linux kernel (no ELF, bzImage, arm64 Image, EFI zboot or "
        "compressed header); `vmkit kernel inspect FILE` says what a file is"
    )


def memory_problem(value: int) -> str | None:
    """More guest RAM than the host has cannot start (QEMU/CH refuse or the host OOMs)."""
    from vmkit.units import format_size

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # psutil's import: ~10 ms
    if value > total:
        return (
            f"{format_size(value)} is more than this host's RAM ({format_size(total)}); give less"
        )
    return None


def duplicate_ports(published: list[tuple[str, str, int, str]]) -> list[tuple[str, str]]:
    """(field, item, host port, proto) for each published port: one host port (per
    protocol) may be published once per VM, whatever the address."""
    seen: dict[tuple[int, str], str] = {}
    out = []
    for field, item, host, proto in published:
        if (host, proto) in seen:
            out.append(
                (field, f"host port {host}/{proto} is already published by {seen[host, proto]}")
            )
        else:
            seen[host, proto] = repr(item)
    return out
