"""Warm pools: N copies restored from one snapshot, paused, handed out at once.

`$VMKIT_HOME/pools/<name>/pool.json` lists the pool's members: ordinary VMs of the store
(named `<pool>-<n>`), restored from the pool's snapshot with fresh MACs, ready, then paused.
Handing one out takes it off the list under the pool's lock (two `vmkit run --pool` never
get the same VM) and resumes it: its readiness was recorded when it was restored. No daemon
refills the pool: a hand-out starts a short-lived filler process (one at a time, by a lock
it tries) that restores copies until the pool is full again and exits; `pool ls` shows it.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit.errors import InvalidInput, NameInUse, NotFound, VmkitError
from vmkit.model import State
from vmkit.names import validate_name
from vmkit.paths import ensure_private_dir
from vmkit.store import LockBusy, atomic_write_json, file_lock, read_json

if TYPE_CHECKING:
    from vmkit.machine.facade import Machine
    from vmkit.machine.host import Host

MAX_SIZE = 64
RECORD = "pool.json"


@dataclass
class Pool:
    name: str
    snapshot: str
    size: int
    members: list[str] = field(default_factory=list)  # paused, ready to hand out
    made: int = 0  # copies ever made: the next member is <name>-<made + 1>
    handed_out: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Pools:
    def __init__(self, host: Host):
        self.host = host
        self.root = host.store.home / "pools"

    def dir(self, name: str) -> Path:
        try:
            return self.root / validate_name(name)
        except ValueError as exc:
            raise InvalidInput(f"pool name: {exc}") from None

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[Pool]:
        """The pool's record, saved again on leaving (short: no VM is made under it)."""
        d = self.dir(name)
        if not (d / RECORD).is_file():
            raise NotFound(f"no pool named {name!r} (see `vmkit pool ls`)")
        with file_lock(d / "lock", 30.0, f"pool {name!r}"):
            pool = Pool(**read_json(d / RECORD))
            yield pool
            atomic_write_json(d / RECORD, pool.to_json())

    def get(self, name: str) -> Pool:
        try:
            return Pool(**read_json(self.dir(name) / RECORD))
        except FileNotFoundError:
            raise NotFound(f"no pool named {name!r} (see `vmkit pool ls`)") from None

    def all(self) -> list[Pool]:
        if not self.root.is_dir():
            return []
        return [
            Pool(**read_json(d / RECORD))
            for d in sorted(self.root.iterdir())
            if (d / RECORD).is_file()
        ]

    def create(self, name: str, snapshot: str, size: int) -> Pool:
        """Record a pool of `size` copies of `snapshot` (filled by `fill`)."""
        if not 1 <= size <= MAX_SIZE:
            raise InvalidInput(f"--size {size}: a pool holds 1-{MAX_SIZE} copies")
        self.host.snapshots.get(snapshot)  # it must exist now
        d = self.dir(name)
        ensure_private_dir(self.root)
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            raise NameInUse(
                f"a pool named {name!r} already exists; remove it with `vmkit pool rm {name}`"
            ) from None
        pool = Pool(name, snapshot, size)
        atomic_write_json(d / RECORD, pool.to_json())
        return pool

    def filling(self, name: str) -> bool:
        """Whether a filler is restoring copies for `name` right now."""
        try:
            with file_lock(self.dir(name) / "fill.lock", 0.0, f"pool {name!r} filler"):
                return False
        except LockBusy:
            return True

    def fill(self, name: str, progress: Callable[[str], None] | None = None) -> list[str]:
        """Restore copies until the pool is full; returns the names made. One filler at a
        time: if another runs, this returns at once (it fills the pool)."""
        say = progress or (lambda _m: None)
        made: list[str] = []
        try:
            with file_lock(self.dir(name) / "fill.lock", 0.0, f"pool {name!r} filler"):
                self.prune(name)
                while True:
                    with self.locked(name) as pool:
                        if len(pool.members) >= pool.size:
                            return made
                        pool.made += 1
                        vm = f"{pool.name}-{pool.made}"[:63]
                        snapshot = pool.snapshot
                    machine = self.host.restore(snapshot, vm)  # ready, with fresh MACs
                    machine.pause()
                    with self.locked(name) as pool:
                        pool.members.append(vm)
                    made.append(vm)
                    say(f"pool {name}: {vm} ready ({len(made)} made)")
        except LockBusy:
            return made

    def prune(self, name: str) -> list[str]:
        """Drop members that are no longer paused copies (killed, crashed, removed)."""
        dropped: list[str] = []
        with self.locked(name) as pool:
            for vm in list(pool.members):
                with contextlib.suppress(VmkitError):
                    if self.host.get(vm).status().state == State.PAUSED:
                        continue
                pool.members.remove(vm)
                dropped.append(vm)
        for vm in dropped:
            with contextlib.suppress(VmkitError):
                self.host.get(vm).delete(force=True)
        return dropped

    def take(self, name: str) -> Machine:
        """Hand out one member: off the list under the pool's lock, then resumed."""
        with self.locked(name) as pool:
            machine = None
            for vm in list(pool.members):
                pool.members.remove(vm)
                with contextlib.suppress(VmkitError):
                    candidate = self.host.get(vm)
                    if candidate.status().state == State.PAUSED:
                        machine = candidate
                        pool.handed_out.append(vm)
                        break
            if machine is None:
                raise VmkitError(
                    f"pool {name!r} has no copy ready (filling: {self.filling(name)}); retry "
                    f"in a moment, or `vmkit pool fill {name}`"
                )
        machine.resume()
        return machine

    def start_filler(self, name: str) -> None:
        """A detached, short-lived process that refills the pool and exits."""
        from vmkit.process import spawn_detached

        d = self.dir(name)
        argv = [sys.executable, "-m", "vmkit.machine.pool_filler"]
        argv += ["--home", str(self.host.store.home)]
        spawn_detached([*argv, "--fill", name], d / "fill.log", d)

    def remove(self, name: str) -> list[str]:
        """Remove the pool and the copies it still holds (handed-out ones stay)."""
        with self.locked(name) as pool:
            members, pool.members = list(pool.members), []
        for vm in members:
            with contextlib.suppress(NotFound):
                self.host.get(vm).delete(force=True)
        d = self.dir(name)
        trash = self.root / f".trash-{name}-{time.monotonic_ns()}"
        d.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
        return members
