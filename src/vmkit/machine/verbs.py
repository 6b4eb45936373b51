"""The verbs on a running VM that need one ability each: pause, resume, reboot, resize,
counters. Each refuses before touching the VM when the driver's Control lacks the ability."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from vmkit.access import fastexec
from vmkit.drivers.abilities import CounterSource, Pausable, Rebootable, Resizable
from vmkit.errors import InvalidInput
from vmkit.model import State

if TYPE_CHECKING:
    from vmkit.machine.facade import Machine
    from vmkit.machine.status import Status


def pause(machine: Machine) -> Status:
    """Freeze the guest's vCPUs (the VMM keeps its memory); `resume` continues."""
    machine.require(Pausable, "pause")
    with machine.locked():
        ctl, _ = machine.live_control(Pausable, "pause")
        if machine.status().state != State.PAUSED:
            fastexec.forget(machine.dir)  # an exec must not hang on a frozen guest
            ctl.pause()
    return machine.status()


def resume(machine: Machine) -> Status:
    machine.require(Pausable, "resume")
    with machine.locked():
        ctl, _ = machine.live_control(Pausable, "resume")
        if machine.status().state == State.PAUSED:
            ctl.resume()
    return machine.status()


def reboot(machine: Machine) -> Status:
    """Reset the guest; readiness is awaited afresh (`vmkit wait`)."""
    machine.require(Rebootable, "reboot")
    with machine.locked():
        ctl, rt = machine.live_control(Rebootable, "reboot")
        offset = machine.serial_log.stat().st_size if machine.serial_log.exists() else 0
        ctl.reboot()
        rt.ready, rt.serial_offset, rt.readiness_failure = None, offset, None
        rt.started_at = time.time()
        machine.save_runtime(rt)
    return machine.status()


def resize(machine: Machine, cpus: int | None = None, memory: int | None = None) -> Status:
    """Change vCPUs / memory of the running VM, within the spec's max_cpus / max_memory."""
    machine.require(Resizable, "resize a running VM")
    spec = machine.spec
    if cpus is not None and not 1 <= cpus <= (spec.max_cpus or spec.cpus):
        raise InvalidInput(
            f"cpus {cpus}: this VM allows 1-{spec.max_cpus or spec.cpus} "
            "(set max_cpus in its spec to allow more)"
        )
    if memory is not None and not spec.memory <= memory <= (spec.max_memory or spec.memory):
        raise InvalidInput(
            f"memory {memory}: this VM allows {spec.memory}-{spec.max_memory or spec.memory} "
            "bytes (set max_memory in its spec to allow more)"
        )
    with machine.locked():
        ctl, rt = machine.live_control(Resizable, "resize")
        ctl.resize(cpus, memory)
        asked = {k: v for k, v in (("cpus", cpus), ("memory", memory)) if v is not None}
        rt.extra["resized"] = {**(rt.extra.get("resized") or {}), **asked}  # for ls / inspect
        machine.save_runtime(rt)
    return machine.status()


def counters(machine: Machine) -> dict[str, Any]:
    ctl, _ = machine.live_control(CounterSource, "report device counters")
    return ctl.counters()
