"""The snapshot store: atomic create/delete, names, leftovers of dead creators."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmkit.errors import InvalidInput, NameInUse, NotFound
from vmkit.hotplug import disk_from_path, next_id
from vmkit.snapshots import SnapshotStore, dir_bytes


def record(name: str) -> dict[str, object]:
    return {
        "name": name,
        "source": "vm",
        "driver": "qemu",
        "created_at": 1.0,
        "bytes": 0,
        "state": {"state_bytes": 0},
        "disks": [],
        "devices": {},
    }


def test_commit_makes_it_visible_and_private(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    staging = store.begin("s1")
    assert store.all() == []  # staging is invisible
    (staging / "state.qemu").write_bytes(b"x" * 10)
    snap = store.commit("s1", staging, record("s1"))
    assert snap.dir == tmp_path / "snapshots" / "s1"
    assert [s.name for s in store.all()] == ["s1"]
    assert store.get("s1").record["source"] == "vm"
    assert (tmp_path / "snapshots").stat().st_mode & 0o777 == 0o700
    assert staging.exists() is False


def test_duplicate_and_bad_names(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.commit("s1", store.begin("s1"), record("s1"))
    with pytest.raises(NameInUse, match="already exists"):
        store.begin("s1")
    for bad in ("../x", "", ".hidden", "a/b", "UPPER"):
        with pytest.raises(InvalidInput, match="snapshot name"):
            store.begin(bad)
    with pytest.raises(NotFound, match="no snapshot named 'nope'"):
        store.get("nope")


def test_remove_is_atomic_and_reports_unknown(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.commit("s1", store.begin("s1"), record("s1"))
    store.remove("s1")
    assert store.all() == []
    assert list((tmp_path / "snapshots").iterdir()) == [tmp_path / "snapshots" / ".lock"]
    with pytest.raises(NotFound):
        store.remove("s1")


def test_leftovers_only_of_dead_creators(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    mine = store.begin("live")  # this process is alive: not a leftover
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = tmp_path / "snapshots" / f".creating-gone-{dead.stdout.strip()}-abc123"
    orphan.mkdir()
    trash = tmp_path / "snapshots" / ".trash-old-1-2"
    trash.mkdir()
    assert store.leftovers() == sorted([orphan, trash])
    assert mine not in store.leftovers()


def test_dir_bytes_counts_allocation_not_apparent_size(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse"
    with sparse.open("wb") as f:
        f.truncate(64 << 20)
    (tmp_path / "dense").write_bytes(os.urandom(1 << 20))
    assert (1 << 20) <= dir_bytes(tmp_path) < (2 << 20)


def test_hotplug_disk_validation(tmp_path: Path) -> None:
    raw = tmp_path / "a.img"
    raw.write_bytes(bytes(4096))
    assert disk_from_path(raw, False, None).format == "raw"
    qcow = tmp_path / "b.qcow2"
    qcow.write_bytes(b"QFI\xfb" + bytes(4092))
    assert disk_from_path(qcow, True, None).format == "qcow2"
    with pytest.raises(InvalidInput, match="is a qcow2 image, not raw"):
        disk_from_path(qcow, False, "raw")
    with pytest.raises(InvalidInput, match="does not exist"):
        disk_from_path(tmp_path / "missing", False, None)
    with pytest.raises(InvalidInput, match="is a directory"):
        disk_from_path(tmp_path, False, None)
    assert next_id({"hd0": {}, "hd1": {}}, "hd") == "hd2"
    assert next_id({"hd1": {}}, "hd") == "hd0"


def test_macs_are_pinned_unique_within_a_store(tmp_path: Path) -> None:
    from vmkit.machine import Host
    from vmkit.net.mac import stable_mac
    from vmkit.spec import spec_from_dict

    host = Host(tmp_path)
    kernel = tmp_path / "k"
    kernel.write_bytes(b"\x7fELFk")

    def make(name: str, nets: list[object]) -> dict[str, object]:
        spec = spec_from_dict(
            {
                "name": name,
                "boot": {"kernel": str(kernel)},
                "networks": nets,
                "accelerator": "tcg",
                "driver": "qemu",
            }
        )
        return host.create(spec).spec_json

    a = make("a", ["nat", "nat"])
    assert [n["mac"] for n in a["networks"]] == [stable_mac("a", 0), stable_mac("a", 1)]
    # a VM whose explicit MAC is taken is refused, with the field named
    with pytest.raises(InvalidInput, match=r"networks\[0\].mac: .* already used"):
        make("b", [{"mode": "nat", "mac": stable_mac("a", 0)}])
    # a hash collision (simulated by pinning c's stable MAC on another VM) picks the next one
    make("d", [{"mode": "nat", "mac": stable_mac("c", 0)}])
    c = make("c", ["nat"])
    assert c["networks"][0]["mac"] == stable_mac("c", 0, salt=1)
