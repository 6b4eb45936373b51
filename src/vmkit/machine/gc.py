"""`vmkit gc`: bring the store back to a consistent, usable state after crashes.

Only what gc can prove is this store's and dead is touched: a socket is removed when a
record of this store names it and the VMM that owned it is gone, never because it "does
not answer" (a switch's datagram ports never do; another VMKIT_HOME may share the runtime
dir). A VMM whose launch was cut off before its pid was recorded is found by its launch
tag and adopted; a create cut off while making its files is rolled back.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from vmkit.errors import NotFound, VmkitError
from vmkit.machine.facade import Machine
from vmkit.model import RuntimeRecord
from vmkit.store import LockBusy

if TYPE_CHECKING:
    from vmkit.machine.host import Host


@dataclass
class GcReport:
    removed_dirs: list[str] = field(default_factory=list)
    killed_pids: list[int] = field(default_factory=list)
    removed_sockets: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    stopped_switches: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    removed_pool_copies: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def collect(host: Host) -> GcReport:
    report = GcReport()
    _leftover_dirs(host, report)
    for machine in host.machines():
        try:
            with machine.locked(5.0):
                _one(machine, report)
        except (LockBusy, NotFound):
            continue
        except VmkitError:
            continue  # a broken record: `vmkit rm --force` removes it
    from vmkit.net import switches

    report.stopped_switches = switches.gc(host.store)
    _pools(host, report)
    return report


def _pools(host: Host, report: GcReport) -> None:
    """Warm pools: drop copies that are no longer paused (killed, crashed), and finish a
    cut-off `pool rm`."""
    from vmkit.machine.pool import Pools

    pools = Pools(host)
    for pool in pools.all():
        with contextlib.suppress(VmkitError, LockBusy):
            report.removed_pool_copies += pools.prune(pool.name)
    if pools.root.is_dir():
        for trash in pools.root.glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)
            report.removed_dirs.append(str(trash))


def _leftover_dirs(host: Host, report: GcReport) -> None:
    """Finish deletes and creates a crash cut off (their dirs are not VMs yet / any more)."""
    with host.store.store_lock():
        for leftover in host.store.leftovers():
            with contextlib.suppress(OSError, ValueError):
                rt = RuntimeRecord.from_json(json.loads((leftover / "runtime.json").read_text()))
                proc = rt.process
                if proc is not None and proc.signal(signal.SIGKILL):
                    proc.wait_gone(10)
                    report.killed_pids.append(proc.pid)
                report.removed_sockets += Machine.remove_sockets(rt)
            shutil.rmtree(leftover, ignore_errors=True)
            report.removed_dirs.append(str(leftover))
        for leftover in host.snapshots.leftovers():
            shutil.rmtree(leftover, ignore_errors=True)
            report.removed_dirs.append(str(leftover))
    from vmkit.drivers.qemu import shared_ram  # a snapshot's RAM conversion cut off

    report.removed_dirs += shared_ram.remove_stale_work_dirs()


def _one(machine: Machine, report: GcReport) -> None:
    """One VM, under its lock (so any temp file of an atomic write there is a dead one's)."""
    for tmp in machine.dir.glob(".*.json.*.tmp"):
        tmp.unlink(missing_ok=True)
    if machine.store.load_machine(machine.name).get("creating"):
        machine.store.remove(machine.name)  # its create was cut off: roll it back
        report.rolled_back.append(machine.name)
        return
    rt = machine.runtime()
    if rt.corrupt:
        return
    proc = machine.process(rt)
    if rt.pid is None and proc is not None:
        rt.pid, rt.create_time = proc.pid, proc.create_time  # a cut-off launch: adopt it
        rt.launching = None
        machine.save_runtime(rt)
        report.adopted.append(machine.name)
    elif rt.pid is None and rt.launching is not None:
        rt.launching = None  # that launch never spawned a VMM (or it is gone)
        machine.save_runtime(rt)
        machine.remove_sockets(rt)
        machine.release_sidecars(with_switches=False)
    if rt.process is None or rt.gc_done or rt.process.alive():
        return
    report.removed_sockets += machine.remove_sockets(rt)
    with contextlib.suppress(VmkitError, OSError):
        # relays, virtiofsds and TAPs vmkit made; switches.gc does the switches
        machine.release_sidecars(with_switches=False)
    rt.gc_done = True
    machine.save_runtime(rt)
    report.finalized.append(machine.name)
