"""access/spare.py: a spare host key and keyed initrd made during one boot and taken whole
by the next new VM (real ssh-keygen). A spare is used once, never shared, and never trusted
beyond its key: a VM whose parts differ gets its initrd rewritten."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vmkit.access import spare
from vmkit.access.boot import GUEST_INITRD, SPARE_FILES, guest_initrd
from vmkit.storage import sshkeys

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+y1GN4hZgMf6ns/bPnSp me"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "initramfs.cpio.gz"
    path.write_bytes(b"\x1f\x8b" + os.urandom(4096))
    return path


def _make(base: Path):
    return lambda folder, name: guest_initrd(folder, name, base, PUB)


def _spares(home: Path) -> list[Path]:
    return sorted((home / spare.SPARE_DIR).iterdir())


def _vm_dir(home: Path, name: str) -> Path:
    path = home / "vms" / name
    path.mkdir(parents=True, mode=0o700)
    return path


def test_one_spare_is_made_private_and_kept_once(home: Path, base: Path) -> None:
    spare.prepare(home, _make(base))
    spare.prepare(home, _make(base))  # one is waiting: nothing more
    (made,) = _spares(home)
    assert stat.S_IMODE((home / spare.SPARE_DIR).stat().st_mode) == 0o700
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    for name in SPARE_FILES:
        assert stat.S_IMODE((made / name).stat().st_mode) & 0o077 == 0, name


def test_a_new_vm_takes_it_whole_and_keeps_its_initrd(home: Path, base: Path) -> None:
    spare.prepare(home, _make(base))
    (made,) = _spares(home)
    key = (made / sshkeys.HOST_KEY).read_bytes()
    vm = _vm_dir(home, "web")
    assert spare.take(home, vm, SPARE_FILES)
    assert _spares(home) == []
    assert sorted(p.name for p in vm.iterdir()) == sorted(SPARE_FILES)
    inode = (vm / GUEST_INITRD).stat().st_ino
    out = guest_initrd(vm, "web", base, PUB)
    assert out.stat().st_ino == inode  # its parts match: not rewritten
    assert (vm / sshkeys.HOST_KEY).read_bytes() == key
    pinned = (vm / sshkeys.KNOWN_HOSTS).read_text()
    assert pinned.startswith("vmkit-web ssh-ed25519 ")
    assert not spare.take(home, _vm_dir(home, "db"), SPARE_FILES)  # used once


def test_a_vm_with_other_parts_gets_its_initrd_rewritten(home: Path, base: Path) -> None:
    spare.prepare(home, _make(base))
    vm = _vm_dir(home, "web")
    assert spare.take(home, vm, SPARE_FILES)
    inode = (vm / GUEST_INITRD).stat().st_ino
    base.write_bytes(b"\x1f\x8b" + os.urandom(4096))  # the tiny guest was rebuilt
    out = guest_initrd(vm, "web", base, PUB)
    assert out.stat().st_ino != inode
    assert out.read_bytes().startswith(base.read_bytes())


def test_a_vm_that_has_a_key_takes_nothing(home: Path, base: Path) -> None:
    vm = _vm_dir(home, "web")
    sshkeys.host_key(vm, "web")
    spare.prepare(home, _make(base))
    assert not spare.take(home, vm, SPARE_FILES)
    assert len(_spares(home)) == 1


def test_half_made_spares_of_dead_processes_are_removed(home: Path, base: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = home / spare.SPARE_DIR
    root.mkdir(mode=0o700)
    abandoned = root / f".new-{dead.pid}-0123abcd"
    abandoned.mkdir()
    (abandoned / sshkeys.HOST_KEY).write_bytes(b"half")
    live = root / f".new-{os.getpid()}-0123abcd"
    live.mkdir()
    spare.prepare(home, _make(base))
    assert not abandoned.exists() and live.exists()
    assert len([p for p in root.iterdir() if not p.name.startswith(".")]) == 1
