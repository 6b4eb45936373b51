"""Disk images outside any VM, with the refusal that needs the store: a disk (or the base
of one) that a running VM uses is not resized or copied under it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vmkit.errors import VMStateError

if TYPE_CHECKING:
    from vmkit.machine.host import Host
    from vmkit.storage.disk import DiskInfo


def running_users(host: Host, target: Path) -> list[str]:
    """Running (or paused) VMs with `target` as a disk or in a disk's backing chain."""
    wanted = target.resolve()
    users = []
    for machine in host.machines():
        if not machine.status().alive:
            continue
        if any(_in_chain(d.path, wanted) for d in machine.spec.disks):
            users.append(machine.name)
    return users


def _in_chain(image: Path | None, wanted: Path) -> bool:
    """`wanted` is `image` or one of its backing files (followed up to 16 levels)."""
    from vmkit.storage.disk import backing_file

    for _ in range(16):
        if image is None:
            return False
        if image.resolve() == wanted:
            return True
        image = backing_file(image)
    return False


def resize(host: Host, path: Path, size: int) -> DiskInfo:
    """Grow `path` to `size`; refused while a running VM uses it (or an overlay of it)."""
    from vmkit.storage import disk

    if users := running_users(host, path):
        raise VMStateError(
            f"{path} is in use by running VM {users[0]!r}; stop it first (`vmkit stop {users[0]}`)"
        )
    return disk.resize(path, size)


def convert(
    host: Host, src: Path, dst: Path, fmt: str, progress: Callable[[float], None]
) -> DiskInfo:
    """Copy `src` into a new `dst` in format `fmt`; refused while a running VM writes it."""
    from vmkit.storage import disk

    if users := running_users(host, src):
        raise VMStateError(
            f"{src} is in use by running VM {users[0]!r}, so a copy would not be consistent; "
            f"stop it first (`vmkit stop {users[0]}`)"
        )
    return disk.convert(src, dst, fmt, progress)
