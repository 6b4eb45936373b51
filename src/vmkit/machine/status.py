"""Reading a VM's status: observe reality, derive the state (model.derive_state), and fill
in what a user needs to act on it. Writes nothing: reading a status never changes a record."""

from __future__ import annotations

import time

from vmkit.model import (
    ALIVE_STATES,
    CONTROL_WAIT,
    ExitInfo,
    Observation,
    Ready,
    RuntimeRecord,
    State,
    derive_state,
)
from vmkit.plain import Plain

TYPE_CHECKING = False  # not typing's: `vmkit ls` loads this module (plain.py)
if TYPE_CHECKING:
    from typing import Any

    from vmkit.machine.facade import Machine
    from vmkit.machine.view import MachineView

TAIL = 20


class Status(Plain):
    _fields = (
        "name",
        "state",
        "driver",
        "pid",
        "ip",
        "accelerator",
        "started_at",
        "ready_at",
        "reason",
        "hint",
        "vmm_log_tail",
        "serial_log_tail",
    )
    __slots__ = _fields

    def __init__(
        self,
        name: str,
        state: State,
        driver: str,
        pid: int | None = None,
        ip: str | None = None,
        accelerator: str | None = None,
        started_at: float | None = None,
        ready_at: float | None = None,
        reason: str | None = None,
        hint: str | None = None,
        vmm_log_tail: list[str] | None = None,
        serial_log_tail: list[str] | None = None,
    ):
        self.name, self.state, self.driver, self.pid, self.ip = name, state, driver, pid, ip
        self.accelerator, self.started_at, self.ready_at = accelerator, started_at, ready_at
        self.reason, self.hint = reason, hint
        self.vmm_log_tail = [] if vmm_log_tail is None else vmm_log_tail
        self.serial_log_tail = [] if serial_log_tail is None else serial_log_tail

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES or (self.state == State.FAILED and self.pid is not None)

    def to_json(self) -> dict[str, Any]:
        out = self.as_dict()
        out["state"] = str(self.state)
        return out


def exit_info(machine: MachineView, rt: RuntimeRecord) -> ExitInfo:
    """Why the VMM of `rt` exited: its status if it was our child, and its own logs."""
    from vmkit.process import describe_exit, reap_child

    status = reap_child(rt.pid) if rt.pid is not None else None
    cause = machine.driver.exit_cause(machine.context(str(rt.accelerator or "tcg")))
    if cause is not None and cause.clean:
        return ExitInfo(True, status, f"VMM exited: {cause.reason}")
    why = describe_exit(status)
    if cause is not None:
        why += f" after a {cause.reason}"
    else:
        why += "; no shutdown was requested (killed or crashed)"
    return ExitInfo(False, status, f"VMM exited unexpectedly: {why}")


def seen_ready(machine: MachineView, rt: RuntimeRecord) -> Ready | None:
    """The readiness recorded, else found now past the last offset seen (or by the
    driver's probe, for guests that print no line). Not recorded here: `wait` does that."""
    if rt.ready is not None:
        return rt.ready
    probe = machine.control(rt).probe_readiness(machine.spec_json)
    if probe is not None:
        return Ready(probe.ip, time.time(), rt.serial_offset) if probe.ready else None
    from vmkit.readiness import ReadinessFollower

    follower = ReadinessFollower(
        machine.serial_log, machine.spec_json["readiness"]["marker"], offset=rt.serial_offset
    )
    found = follower.poll()
    return None if found is None else Ready(found.ip, time.time(), found.offset)


def broken_reason(machine: MachineView) -> str | None:
    """Why the VM's machine.json is not a usable record (unreadable, wrong types, unknown
    driver, invalid spec), or None. Such a VM is `broken`; `rm --force` removes it."""
    from vmkit.errors import SpecError, VmkitError
    from vmkit.store import BrokenRecord

    try:
        record = machine.record  # read once per Machine: the record it already holds
        machine.check_driver()
        if not record.spec_intact:  # edited or damaged since vmkit wrote it: validate
            from vmkit.spec import spec_from_dict

            spec_from_dict(record.spec, check_files=False)
    except BrokenRecord as exc:
        return exc.reason
    except SpecError as exc:
        why = "; ".join(f"{f}: {m}" for f, m in exc.problems)
        return f"machine.json has an invalid spec: {why}"
    except (VmkitError, ValueError) as exc:
        return str(exc)
    return None


def read_status(
    machine: MachineView, rt: RuntimeRecord | None = None, seen_running: bool = False
) -> Status:
    """`rt`: runtime.json as the caller just read it (else read here). `seen_running`: the
    caller holds the VM's lock and has just seen the guest run (its readiness line, or the
    VMM's answer to a resume), so the VMM's run state is that observation and the control
    socket is not asked again."""
    broken = broken_reason(machine)
    if broken is not None:
        return Status(
            machine.name,
            State.BROKEN,
            "?",
            reason=broken,
            hint=f"`vmkit rm --force {machine.name}` removes it",
        )
    rt = machine.runtime() if rt is None else rt
    st = Status(machine.name, State.CREATED, machine.driver_name)
    if machine.record.extra.get("creating") and not machine.store.lock_busy(machine.name):
        st.state = State.BROKEN
        st.reason = "its `vmkit create` was cut off while making its disks"
        st.hint = f"`vmkit gc` removes it; then create {machine.name} again"
        return st
    proc = machine.process(rt)
    if rt.corrupt:
        st.state, st.reason = State.BROKEN, f"runtime.json cannot be read: {rt.corrupt}"
        st.pid = proc.pid if proc is not None and proc.alive() else None
        st.hint = f"`vmkit rm --force {machine.name}` removes it (and ends its VMM, if any)"
        return st
    if proc is None:
        return st
    st.accelerator, st.started_at = rt.accelerator, rt.started_at
    alive = proc.alive()
    ready: Ready | None = None
    vmm_state: str | None = None
    exit_: ExitInfo | None = None
    stopping = False
    if alive:
        st.pid = proc.pid
        ready = seen_ready(machine, rt)
        # a stop is in progress only while its stopper holds the VM's lock
        stopping = rt.stopping and machine.store.lock_busy(machine.name)
        if seen_running:
            vmm_state = "running"
        elif not stopping:
            vmm_state = machine.control(rt).state()
    else:
        exit_ = rt.exit or exit_info(machine, rt)
    started = rt.started_at or (rt.launching or {}).get("at") or 0.0  # or still launching
    young = time.time() - float(started) < CONTROL_WAIT
    st.state = derive_state(
        Observation(
            launched=True,
            alive=alive,
            vmm_state=vmm_state,
            young=young,
            ready=ready is not None,
            stopping=alive and stopping,
            readiness_failed=rt.readiness_failure is not None,
            # a VMM that crashed while a stop waited on the power button was not stopped
            stopped_by_vmkit=rt.stop is not None and rt.stop.step != "crashed",
            exit_clean=None if exit_ is None else exit_.clean,
        )
    )
    if ready is not None:
        st.ip, st.ready_at = ready.ip, ready.at
    if st.state == State.UNRESPONSIVE:
        st.reason = "the VMM process is alive but its control socket does not answer"
    if st.ip is None and st.state in (State.RUNNING, State.READY):
        st.ip = machine.driver.guest_ip(machine.spec_json)
    if alive and st.state == State.FAILED and rt.readiness_failure is not None:
        st.reason, st.hint = rt.readiness_failure.reason, rt.readiness_failure.hint
        _tails(machine, st)
    elif not alive and exit_ is not None:
        if rt.stop is not None and rt.stop.step != "crashed":
            st.reason = f"stopped by `vmkit {rt.stop.requested}` ({rt.stop.step})"
        else:
            st.reason = exit_.reason
        if st.state == State.FAILED:
            from vmkit import hostinfo

            st.hint = hostinfo.accel_hint(str(rt.accelerator))
            _tails(machine, st)
    return st


def _tails(machine: MachineView, st: Status) -> None:
    from vmkit.readiness import tail_lines

    st.vmm_log_tail = tail_lines(machine.vmm_log, TAIL)
    st.serial_log_tail = tail_lines(machine.serial_log, TAIL)


def inspect(machine: Machine) -> dict[str, Any]:
    record = machine.record
    status = machine.status()
    extra = machine.control().inspect_extra() if status.alive else {}
    return {
        "name": machine.name,
        "driver": record.driver,
        "created_at": record.created_at,
        "spec": record.spec,
        "status": status.to_json(),
        "runtime": machine.runtime().to_json(),
        **({"vmm": extra} if extra else {}),
        "disks_made": record.disks_made,  # VM-owned disks: how each was made
        "paths": {
            "dir": str(machine.dir),
            "serial_log": str(machine.serial_log),
            "vmm_log": str(machine.vmm_log),
        },
    }
