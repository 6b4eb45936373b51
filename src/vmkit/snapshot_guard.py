"""A `snapshot create` cut off while the guest is paused must not leave it paused.

While it pauses the guest, the snapshot holds the VM lock, records a `paused_by_snapshot`
marker in runtime.json and turns SIGTERM and SIGHUP into an exception, so the `finally` that
resumes the guest runs (Ctrl-C already does). SIGKILL cannot be caught: whoever takes the VM
lock next (every verb, `gc`, and `status`/`ls` when they see the marker) finds the marker
with the lock free — its snapshot is gone — and resumes the guest (QemuControl.resume
cancels the cut-off save first).
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

from vmkit.drivers.abilities import Pausable, ability
from vmkit.errors import VmkitError
from vmkit.model import SNAPSHOT_PAUSED

if TYPE_CHECKING:
    from vmkit.machine.facade import Machine
    from vmkit.machine.view import MachineView
    from vmkit.model import RuntimeRecord

MARK = SNAPSHOT_PAUSED
CAUGHT = (signal.SIGTERM, signal.SIGHUP)


class SnapshotInterrupted(VmkitError):
    """A catchable signal arrived while the snapshot had the guest paused."""

    exit_code = 130


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise SnapshotInterrupted(
        f"snapshot interrupted by {signal.Signals(signum).name}; the guest was resumed"
    )


@contextlib.contextmanager
def paused(machine: Machine) -> Iterator[None]:
    """Around the pause..resume of a snapshot (the caller holds the VM lock)."""
    rt = machine.runtime()
    rt.extra[MARK] = {"at": time.time()}
    machine.save_runtime(rt)
    old = {}
    with contextlib.suppress(ValueError):  # not the main thread: the marker still protects
        for sig in CAUGHT:
            old[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        rt = machine.runtime()
        rt.extra.pop(MARK, None)
        machine.save_runtime(rt)


def recover(machine: MachineView, rt: RuntimeRecord) -> None:
    """With the VM lock just taken: a marker left means its snapshot died with the guest
    paused; resume it."""
    if MARK not in rt.extra:
        return
    with contextlib.suppress(VmkitError, OSError):
        pauser = ability(machine.control(rt), Pausable)
        if pauser is not None:
            pauser.resume()
    rt.extra.pop(MARK, None)
    machine.save_runtime(rt)
