"""A spare host key and keyed initrd for the next tiny-guest VM, made while a guest boots.

A new VM's first start makes its SSH host key (ssh-keygen, ~10 ms) and writes its 4 MB
keyed initrd (~10 ms) before the VMM can fork: most of what `Host.run` does before the
hypervisor starts. The spare is made while an earlier guest boots (the wait is idle time),
in `<data home>/spare/<random>/` (0700, key 0600), and a new VM takes it whole with one
rename, so two vmkits never share one: the loser of a race makes its own key. A spare is
never trusted for more than its key: the VM's initrd is rewritten unless the spare's stamp
matches the VM's own parts (access/boot.py), and the key is pinned under the VM's name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from vmkit.errors import VmkitError
from vmkit.paths import ensure_private_dir
from vmkit.storage import sshkeys as keys

SPARE_DIR = "spare"


def take(home: Path, vm_dir: Path, files: tuple[str, ...]) -> bool:
    """Move a spare's `files` (its key and initrd: access.boot.SPARE_FILES) into `vm_dir`,
    a VM that has no host key yet."""
    if (vm_dir / keys.HOST_KEY).exists():
        return False
    root = home / SPARE_DIR
    try:
        entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    except OSError:
        return False
    for entry in entries:
        claimed = vm_dir / f".spare-{entry}"
        try:
            os.rename(root / entry, claimed)  # atomic: one taker per spare
        except OSError:
            continue
        try:
            if not (claimed / keys.HOST_KEY).is_file():
                continue
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    os.replace(claimed / name, vm_dir / name)
            return True
        finally:
            shutil.rmtree(claimed, ignore_errors=True)
    return False


def prepare(home: Path, make: Callable[[Path, str], object]) -> None:
    """Make one spare if none is waiting: `make(folder, name)` writes a VM's key and keyed
    initrd into `folder` (access.boot.guest_initrd with the VM's parts). Never fails the
    caller: a spare is an optimisation, and the next VM makes its own key without one."""
    root = home / SPARE_DIR
    work: Path | None = None
    try:
        ensure_private_dir(root)
        names = os.listdir(root)
        if any(not n.startswith(".") for n in names):
            return
        _remove_abandoned(root, names)
        work = root / f".new-{os.getpid()}-{os.urandom(4).hex()}"
        work.mkdir(mode=0o700)
        make(work, "spare")
        os.rename(work, root / os.urandom(8).hex())
        work = None
    except (OSError, VmkitError):
        pass
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _remove_abandoned(root: Path, names: list[str]) -> None:
    """Half-made spares of vmkit processes that no longer run."""
    for name in names:
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == ".new" and parts[1].isdecimal():
            try:
                os.kill(int(parts[1]), 0)
            except ProcessLookupError:
                shutil.rmtree(root / name, ignore_errors=True)
            except OSError:
                pass
