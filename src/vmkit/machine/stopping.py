"""Ending a VM's VMM: stop (power button, then escalation, saying which step ended it) and
kill."""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from vmkit import faults
from vmkit.drivers.base import Control

if TYPE_CHECKING:
    from vmkit.machine.facade import Machine


@dataclass
class StopResult:
    name: str
    step: (
        str  # acpi | a driver's hard stop (e.g. vm.shutdown) | sigterm | sigkill | already-stopped
    )
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
