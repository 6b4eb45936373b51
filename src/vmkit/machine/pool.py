"""Warm pools: N copies restored from one snapshot, paused, handed out at once.

`$VMKIT_HOME/pools/<name>/pool.json` lists the pool's members: ordinary VMs of the store
(named `<pool>-<n>`), restored from the pool's snapshot with fresh MACs, ready, then paused.
Handing one out takes it off the list under the pool's lock (two `vmkit run --pool` never
get the same VM) and resumes it: its readiness was recorded when it was restored. No daemon
refills the pool: a hand-out starts a short-lived filler process (one at a time, by a lock
it tries) that restores copies until the pool is full again and exits; `pool ls` shows it.

A hand-out (`hand_out`, `start_filler`) needs only the store and MachineView, so that
`vmkit run --pool` can answer without the CLI or the Machine facade (cli_direct.py).
"""

from __future__ import annotations

import contextlib
import sys

from vmkit.errors import InvalidInput, NameInUse, NotFound, VmkitError, VMStateError
from vmkit.machine.view import MachineView
from vmkit.model import State
from vmkit.names import validate_name
from vmkit.paths import ensure_private_dir
from vmkit.plain import Plain
from vmkit.store import LockBusy, Store, atomic_write_json, file_lock, read_json

TYPE_CHECKING = False  # not typing's: a hand-out loads this module (cli_direct.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import Any

    from vmkit.drivers.abilities import Pausable
    from vmkit.machine.facade import Machine
    from vmkit.machine.host import Host
    from vmkit.machine.status import Status

MAX_SIZE = 64
RECORD = "pool.json"


class Pool(Plain):
    _fields = ("name", "snapshot", "size", "members", "made", "handed_out")
    __slots__ = _fields

    def __init__(
        self,
        name: str,
        snapshot: str,
        size: int,
        members: list[str] | None = None,  # paused, ready to hand out
        made: int = 0,  # copies ever made: the next member is <name>-<made + 1>
        handed_out: list[str] | None = None,
    ):
        self.name = name
        self.snapshot = snapshot
        self.size = size
        self.members = [] if members is None else members
        self.made = made
        self.handed_out = [] if handed_out is None else handed_out

    def to_json(self) -> dict[str, Any]:
        return self.as_dict()


def pools_root(store: Store) -> Path:
    return store.home / "pools"


def pool_dir(store: Store, name: str) -> Path:
    try:
        return pools_root(store) / validate_name(name)
    except ValueError as exc:
        raise InvalidInput(f"pool name: {exc}") from None


def _missing(name: str) -> NotFound:
    return NotFound(f"no pool named {name!r} (see `vmkit pool ls`)")


@contextlib.contextmanager
def locked(store: Store, name: str) -> Iterator[Pool]:
    """The pool's record, saved again on leaving (short: no VM is made under it)."""
    d = pool_dir(store, name)
    if not (d / RECORD).is_file():
        raise _missing(name)
    with file_lock(d / "lock", 30.0, f"pool {name!r}"):
        pool = Pool(**read_json(d / RECORD))
        yield pool
        atomic_write_json(d / RECORD, pool.to_json())


def filling(store: Store, name: str) -> bool:
    """Whether a filler is restoring copies for `name` right now."""
    try:
        with file_lock(pool_dir(store, name) / "fill.lock", 0.0, f"pool {name!r} filler"):
            return False
    except LockBusy:
        return True


class PoolEmpty(VmkitError):
    """No member of the pool could be handed out."""


def hand_out(store: Store, name: str, dropped: list[str]) -> tuple[MachineView, Status]:
    """Take the first member that is still a paused copy off the list and resume it, under
    the pool's lock and then the copy's own (so nothing acts on it in between); returns it
    with its status once resumed. A member that is no longer paused (stopped, crashed,
    removed) or fails to resume leaves the list and is added to `dropped`, for the caller
    to delete as `Pools.prune` does (the filler, or Pools.take). One busy with another verb
    stays for the next hand-out. Raises PoolEmpty."""
    taken: tuple[MachineView, Status] | None = None
    with locked(store, name) as pool:  # saved on leaving, with the members dropped
        for vm in list(pool.members):
            try:
                taken = _resume_member(store, name, vm)
            except LockBusy:
                continue
            except VmkitError:
                pool.members.remove(vm)
                dropped.append(vm)
                continue
            pool.members.remove(vm)
            pool.handed_out.append(vm)
            break
    if taken is None:
        raise PoolEmpty(f"pool {name!r} has no copy ready")
    return taken


def hand_out_then_refill(
    store: Store,
    name: str,
    answer: Callable[[Status], None],
    caller_exits: bool = False,
) -> str | None:
    """A hand-out as `vmkit run --pool` makes it: `answer` is given the copy's status, then
    the filler starts (after the answer: it competes for the CPU), and deletes the copies
    the hand-out dropped. A pool with nothing to hand out starts its filler too, else it
    would stay empty, and PoolEmpty says so. Returns a warning if the filler could not
    start: the copy was handed out all the same."""
    dropped: list[str] = []
    try:
        _view, status = hand_out(store, name, dropped)
    except PoolEmpty as exc:
        try:
            start_filler(store, name, caller_exits, dropped)
        except (OSError, VmkitError) as why:
            msg = f"{exc}, and could not start refilling ({why}): {_fill(name)}"
            raise PoolEmpty(msg) from None
        raise PoolEmpty(
            f"{exc}; it is refilling now: retry in a moment (`vmkit pool ls` shows it)"
        ) from None
    answer(status)
    try:
        start_filler(store, name, caller_exits, dropped)
    except (OSError, VmkitError) as exc:
        return f"pool {name!r} could not start refilling ({exc}): {_fill(name)}"
    return None


def _fill(name: str) -> str:
    return f"run `vmkit pool fill {name}`"


def _resume_member(store: Store, name: str, vm: str) -> tuple[MachineView, Status]:
    """Machine.resume without the facade, for a copy that must still be paused."""
    from vmkit.machine.status import read_status

    view = MachineView(store, vm)
    with view.locked(0.0) as rt:
        state = read_status(view, rt).state
        if state != State.PAUSED:
            raise VMStateError(f"pool {name!r}: {vm} is {state}, not paused")
        # the filler paused this copy with Machine.pause, which refuses a driver whose
        # Control is not Pausable
        ctl: Pausable = view.control(rt)  # type: ignore[assignment]
        ctl.resume()  # returns once QEMU runs it: the status needs no second query
        return view, read_status(view, rt, seen_running=True)


def start_filler(
    store: Store, name: str, caller_exits: bool = False, discard: list[str] | None = None
) -> None:
    """A detached, short-lived process that deletes the copies in `discard` (dropped from
    the pool by a hand-out), refills the pool and exits. `caller_exits`: the caller ends at
    once (the CLI's hand-out), so the filler starts without subprocess and is left for
    init to reap."""
    from vmkit.process import spawn_detached, spawn_orphan

    d = pool_dir(store, name)
    argv = [sys.executable, "-m", "vmkit.machine.pool_filler"]
    argv += ["--home", str(store.home), "--fill", name]
    for vm in discard or ():
        argv += ["--discard", vm]
    if caller_exits:
        spawn_orphan(argv, d / "fill.log")
    else:
        spawn_detached(argv, d / "fill.log", d)


class Pools:
    def __init__(self, host: Host):
        self.host = host
        self.store = host.store
        self.root = pools_root(host.store)

    def dir(self, name: str) -> Path:
        return pool_dir(self.store, name)

    def locked(self, name: str) -> contextlib.AbstractContextManager[Pool]:
        return locked(self.store, name)

    def get(self, name: str) -> Pool:
        try:
            return Pool(**read_json(self.dir(name) / RECORD))
        except FileNotFoundError:
            raise _missing(name) from None

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
        return filling(self.store, name)

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
                    try:
                        machine.pause()
                        with self.locked(name) as pool:
                            pool.members.append(vm)
                    except BaseException:  # e.g. `pool rm` meanwhile: no copy left behind
                        with contextlib.suppress(VmkitError):
                            machine.delete(force=True)
                        raise
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
        self.discard(dropped)
        return dropped

    def discard(self, vms: list[str]) -> None:
        """Delete copies the pool dropped, which nobody was given."""
        for vm in vms:
            with contextlib.suppress(VmkitError):
                self.host.get(vm).delete(force=True)

    def take(self, name: str) -> Machine:
        """Hand out one member: off the list under the pool's lock, then resumed (see
        hand_out). The caller starts the filler afterwards (start_filler), whether or not
        a member was taken."""
        dropped: list[str] = []
        try:
            return self.host.get(hand_out(self.store, name, dropped)[0].name)
        finally:
            self.discard(dropped)

    def start_filler(self, name: str) -> None:
        start_filler(self.store, name)

    def remove(self, name: str) -> list[str]:
        """Remove the pool and the copies it still holds (handed-out ones stay)."""
        import shutil
        import time

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
