"""Ending a VM's VMM: stop (power button, then escalation, saying which step ended it),
kill, and delete (the VM and every file it owns)."""

from __future__ import annotations

import contextlib
import signal
import time
from typing import TYPE_CHECKING, Any

from vmkit import faults
from vmkit.drivers.base import Control
from vmkit.errors import VMFailed, VmkitError, VMStateError
from vmkit.machine.status import broken_reason
from vmkit.plain import Plain

if TYPE_CHECKING:
    from vmkit.machine.facade import Machine


class StopResult(Plain):
    _fields = ("name", "step", "seconds")
    __slots__ = _fields

    def __init__(self, name: str, step: str, seconds: float):
        self.name = name
        # acpi | a driver's hard stop (e.g. vm.shutdown) | sigterm | sigkill | already-stopped
        self.step = step
        self.seconds = seconds

    def to_json(self) -> dict[str, Any]:
        return self.as_dict()


def stop(machine: Machine, timeout: float = 30.0) -> StopResult:
    """ACPI power button -> wait `timeout` -> hard stop -> SIGTERM -> SIGKILL; says which
    step ended it."""
    t0 = time.monotonic()
    with machine.locked(timeout + 60):
        rt = machine.runtime()
        proc = machine.process(rt)
        if proc is None or not proc.alive():
            return StopResult(machine.name, "already-stopped", 0.0)
        rt.stopping = True
        machine.save_runtime(rt)
        faults.point("stop:stopping")
        ctl = machine.control(rt)
        step = "sigkill"
        try:
            try:
                ctl.power_button()
                powered = proc.wait_gone(timeout)
            except Exception:
                powered = proc.wait_gone(0)
            if powered:  # or it died on its own meanwhile (a vCPU crash): say which
                ctx = machine.context(str(rt.accelerator))
                cause = machine.driver.exit_cause(ctx)
                step = "acpi" if cause is None or cause.clean else "crashed"
            elif (hard := _hard_stop(ctl)) is not None and proc.wait_gone(10):
                step = hard
            elif proc.signal(signal.SIGTERM) and proc.wait_gone(10):
                step = "sigterm"
            else:
                proc.signal(signal.SIGKILL)
                proc.wait_gone(10)
        finally:
            machine.mark_ended(rt, proc, "stop", step)
    return StopResult(machine.name, step, round(time.monotonic() - t0, 3))


def _hard_stop(ctl: Control) -> str | None:
    try:
        return ctl.hard_stop()
    except Exception:
        return None


def kill(machine: Machine) -> StopResult:
    t0 = time.monotonic()
    with machine.locked():
        rt = machine.runtime()
        proc = machine.process(rt)
        if proc is None or not proc.alive():
            return StopResult(machine.name, "already-stopped", 0.0)
        proc.signal(signal.SIGKILL)
        proc.wait_gone(10)
        machine.mark_ended(rt, proc, "kill", "sigkill")
    return StopResult(machine.name, "sigkill", round(time.monotonic() - t0, 3))


def delete(machine: Machine, force: bool = False) -> None:
    """Remove the VM; refuses a running one unless `force` (then it is killed first)."""
    with machine.locked():
        rt = machine.runtime()
        proc = machine.process(rt)
        if proc is not None and proc.alive():
            if not force:
                raise VMStateError(
                    f"VM {machine.name!r} is running (pid {proc.pid}); stop it first "
                    f"(`vmkit stop {machine.name}`) or use `vmkit rm --force {machine.name}`"
                )
            proc.signal(signal.SIGKILL)
            if not proc.wait_gone(10):
                raise VMFailed(f"VM {machine.name!r}: the VMM (pid {proc.pid}) did not die")
        faults.point("rm:killed")
        machine.remove_sockets(rt)
        broken = broken_reason(machine)
        if broken is not None and not force:
            raise VMStateError(f"VM {machine.name!r} is broken: {broken}; use `vmkit rm --force`")
        with contextlib.suppress(VmkitError):
            machine.release_sidecars()
        faults.point("rm:released")
        machine.store.remove(machine.name)
