"""Snapshots as first-class records: a directory per snapshot under `<home>/snapshots/`.

  snapshots/<name>/snapshot.json   name, source VM, driver, spec, sizes, devices, created
  snapshots/<name>/state.*         the driver's RAM + device state
  snapshots/<name>/disks/diskN     clones of the source's writable disks at that instant

A snapshot is built in a `.creating-` directory and renamed into place, and deleted by a
rename to `.trash-` first, so it is either complete or absent; `vmkit gc` removes leftovers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from vmkit.errors import InvalidInput, NameInUse, NotFound
from vmkit.names import validate_name
from vmkit.paths import ensure_private_dir
from vmkit.plain import Frozen
from vmkit.store import atomic_write_json, file_lock, read_json, temp_dir_in

RECORD = "snapshot.json"


class Snapshot(Frozen):
    _fields = ("name", "dir", "record")
    __slots__ = _fields

    def __init__(self, name: str, dir: Path, record: dict[str, Any]):
        self.name, self.dir, self.record = name, dir, record

    @property
    def driver(self) -> str:
        return str(self.record["driver"])

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.record["state"]
        return state

    def summary(self) -> dict[str, Any]:
        r = self.record
        return {
            "name": self.name,
            "source": r["source"],
            "driver": r["driver"],
            "created_at": r["created_at"],
            "bytes": r["bytes"],
            "state_bytes": r["state"].get("state_bytes"),
            "state_file": r["state"].get("state_file"),
            # "yes": restored copies map the RAM copy-on-write; else why not
            "shared_ram": r.get("shared_ram"),
            "disks": [d["index"] for d in r["disks"]],
            "devices": r.get("devices", {}),
            "path": str(self.dir),
        }


def _check_name(name: str) -> str:
    try:
        return validate_name(name)
    except ValueError as exc:
        raise InvalidInput(f"snapshot name: {exc}") from None


class SnapshotStore:
    def __init__(self, home: Path):
        self.root = home / "snapshots"

    def ensure(self) -> None:
        ensure_private_dir(self.root.parent)
        ensure_private_dir(self.root)

    def _lock(self) -> Any:
        self.ensure()
        return file_lock(self.root / ".lock", 30.0, "the snapshot store")

    def path(self, name: str) -> Path:
        return self.root / _check_name(name)

    def get(self, name: str) -> Snapshot:
        d = self.path(name)
        try:
            record = read_json(d / RECORD)
        except FileNotFoundError:
            raise NotFound(f"no snapshot named {name!r} (see `vmkit snapshot ls`)") from None
        return Snapshot(name, d, record)

    def all(self) -> list[Snapshot]:
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(".") or not (d / RECORD).is_file():
                continue
            out.append(Snapshot(d.name, d, read_json(d / RECORD)))
        return out

    def begin(self, name: str) -> Path:
        """A private staging directory for a new snapshot named `name` (checked free now)."""
        self.ensure()
        if self.path(name).exists():
            raise NameInUse(
                f"a snapshot named {name!r} already exists; pick another name or remove it "
                f"with `vmkit snapshot rm {name}`"
            )
        staging = temp_dir_in(self.root, f".creating-{name}-{os.getpid()}-")
        os.chmod(staging, 0o700)
        return staging

    def commit(self, name: str, staging: Path, record: dict[str, Any]) -> Snapshot:
        atomic_write_json(staging / RECORD, record)
        with self._lock():
            final = self.path(name)
            if final.exists():
                import shutil

                shutil.rmtree(staging, ignore_errors=True)
                raise NameInUse(f"a snapshot named {name!r} was created meanwhile")
            os.rename(staging, final)
        return Snapshot(name, final, record)

    def remove(self, name: str) -> None:
        with self._lock():
            d = self.path(name)
            if not (d / RECORD).is_file():
                raise NotFound(f"no snapshot named {name!r} (see `vmkit snapshot ls`)")
            trash = self.root / f".trash-{name}-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(d, trash)
        import shutil

        shutil.rmtree(trash, ignore_errors=True)

    def leftovers(self) -> list[Path]:
        """Staging dirs of snapshot creations whose process is gone, and cut-off deletes."""
        if not self.root.is_dir():
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            if not p.is_dir():
                continue
            if p.name.startswith(".trash-"):
                out.append(p)
            elif p.name.startswith(".creating-"):
                pid = _creator_pid(p.name)
                if pid is None or not _pid_alive(pid):
                    out.append(p)
        return out


def _creator_pid(dirname: str) -> int | None:
    """`.creating-<name>-<pid>-<random>`: mkdtemp's random part has no '-'."""
    parts = dirname.split("-")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdecimal() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dir_bytes(path: Path) -> int:
    """Allocated bytes under `path` (what the snapshot really costs on disk)."""
    total = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_blocks * 512
    return total
