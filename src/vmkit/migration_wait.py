"""The end of a live migration: wait for the real outcome before anything of the source moves.

A VMM that accepted `send-migration` has not migrated anything yet (Cloud Hypervisor runs
it in a background worker and answers 204 at once; that worker can also die). So the
source's disks and serial log go to the target only once the source reports the
migration finished AND the target's VMM says the guest runs; on any other outcome the
target is removed and the source keeps everything (resumed if it was left paused).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

from vmkit.errors import VMFailed, VmkitError
from vmkit.readiness import tail_lines

if TYPE_CHECKING:
    from vmkit.drivers.base import Control, Driver
    from vmkit.machine import Machine
    from vmkit.process import ProcessRef

POLL = 0.05


def await_target(
    source: Machine,
    target: Machine,
    sender: Control,
    receiver: Control,
    src_proc: ProcessRef | None,
    target_proc: ProcessRef,
    timeout: float,
) -> None:
    """Return once the migration finished and the target runs the guest; else VMFailed."""
    deadline = time.monotonic() + timeout
    headline = f"live migration of {source.name!r} to {target.name!r} failed"
    while True:
        result = sender.migration_result()
        if result == "failed":
            raise VMFailed(
                f"{headline}: the source VMM reports it failed; {source.name!r} keeps its "
                "guest and disks\n" + _log_tail(source)
            )
        if target_proc.wait_gone(0):
            raise VMFailed(
                f"{headline}: the target VMM exited before running the guest; "
                f"{source.name!r} keeps its disks\n" + _log_tail(target)
            )
        if result == "finished" and receiver.state() == "running":
            return
        if result is None and src_proc is not None and src_proc.wait_gone(0):
            reason = source.status().reason or "it exited"
            raise VMFailed(
                f"{headline}: the source VMM died during the migration ({reason}). Its disks "
                f"were not moved: `vmkit start {source.name}` boots it again (the guest's "
                "memory is lost)\n" + _log_tail(source)
            )
        if time.monotonic() > deadline:
            raise VMFailed(
                f"{headline}: no outcome within {timeout:g}s; the target was removed and "
                f"{source.name!r} keeps its disks"
            )
        time.sleep(POLL)


def recover_source(sender: Control, src_proc: ProcessRef | None) -> None:
    """After a failed migration: a source VMM still up but left paused runs again."""
    from vmkit.drivers.abilities import Pausable, ability

    if src_proc is None or src_proc.wait_gone(0):
        return
    with contextlib.suppress(VmkitError):
        pausable = ability(sender, Pausable)
        if pausable is not None and sender.state() == "paused":
            pausable.resume()


def move_serial(source: Machine, target: Machine, driver: Driver) -> None:
    """Where the target writes the source's serial file (Cloud Hypervisor: its config came
    with the migration), move that file into the target's folder: the target VMM's open fd
    follows a rename, and `vmkit logs` / readiness on the target read it there."""
    if not driver.serial_follows_migration:
        return
    src, dst = source.serial_log, target.serial_log
    if src == dst or not src.is_relative_to(source.dir) or not src.exists():
        return
    dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.replace(src, dst)


def _log_tail(machine: Machine) -> str:
    lines = tail_lines(machine.vmm_log, 8)
    return f"--- last lines of {machine.vmm_log} ---\n" + "\n".join(lines or ["(empty)"])
