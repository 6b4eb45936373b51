"""Waiting for a guest to be ready, and saying why it is not."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from vmkit import hostinfo
from vmkit.errors import ReadinessTimeout, VMFailed, VMStateError
from vmkit.filewatch import Watch
from vmkit.machine.status import TAIL, Status, read_status
from vmkit.model import ReadinessFailure, Ready, State
from vmkit.readiness import ReadinessFollower, tail_lines

if TYPE_CHECKING:
    from vmkit.machine.facade import Machine

PROBE_EVERY = 0.2  # seconds between driver readiness probes (guests that print no line)
SAFETY_WAKE = 1.0  # a missed event (log rotated, file replaced) costs at most this


def wait_ready(machine: Machine, timeout: float | None = None, poll: float = 0.02) -> Status:
    """Block until the guest prints its readiness line; VMFailed/ReadinessTimeout if not."""
    if machine.record.spec_intact:  # as vmkit validated and stored it: no spec layer
        readiness = machine.spec_json["readiness"]
        marker, spec_limit = str(readiness["marker"]), float(readiness["timeout"])
    else:  # edited since: validated (defaults filled in, or a SpecError naming the field)
        spec = machine.spec
        marker, spec_limit = spec.readiness.marker, spec.readiness.timeout
    rt = machine.runtime()
    proc = machine.process(rt)
    if proc is None:
        raise VMStateError(
            f"VM {machine.name!r} was never started; run `vmkit start {machine.name}`"
        )
    if rt.ready is not None and proc.alive():
        return machine.status()
    limit = spec_limit if timeout is None else timeout
    follower = ReadinessFollower(machine.serial_log, marker, offset=rt.serial_offset)
    started = float(rt.started_at or time.time())
    deadline = time.monotonic() + max(0.0, limit - max(0.0, time.time() - started))
    if machine.spare_wanted:  # the guest boots meanwhile: idle time for the next VM's key
        from vmkit.access.boot import make_spare

        machine.spare_wanted = False
        make_spare(machine.spec, machine.store.home)
    ctl = machine.control(rt)
    probe = ctl.probe_readiness(machine.spec_json)
    next_probe = time.monotonic() + PROBE_EVERY
    with Watch(machine.serial_log, proc.pid) as watch:
        while True:
            found = follower.poll()
            if found is not None:
                return _record_ready(machine, Ready(found.ip, time.time(), found.offset))
            now = time.monotonic()
            if probe is not None and now >= next_probe:
                next_probe = now + PROBE_EVERY
                probe = ctl.probe_readiness(machine.spec_json)
                if probe is not None and probe.ready:
                    return _record_ready(machine, Ready(probe.ip, time.time(), follower.offset))
            if proc.wait_gone(0):
                st = machine.status()
                raise VMFailed(
                    machine.failure_message(st, "the VMM exited before the guest was ready")
                )
            if now >= deadline:
                hint = hostinfo.accel_hint(str(rt.accelerator))
                reason = f"the guest did not print '{marker} <ip>' within {limit:g}s"
                if probe is not None:
                    reason = f"the guest was not {probe.waiting_for} within {limit:g}s"
                machine.update_runtime(
                    readiness_failure=ReadinessFailure(reason, hint).as_dict(),
                    serial_offset=follower.offset,
                )
                st = machine.status()
                raise ReadinessTimeout(machine.failure_message(st, reason, hint))
            # Wakes when the serial log is written or the VMM exits (a fixed `poll` where
            # the platform has neither inotify nor kqueue); the probe keeps its own pace.
            wake = deadline if watch.event_driven else min(deadline, now + poll)
            if probe is not None:
                wake = min(wake, next_probe)
            watch.wait(min(wake - now, SAFETY_WAKE))


def _record_ready(machine: Machine, ready: Ready) -> Status:
    """Record the readiness just seen and return the status, in one hold of the VM's lock
    and one read of runtime.json: the guest was seen running a moment ago and nothing
    vmkit does can pause or stop it while the lock is held (status.read_status)."""
    with machine.locked() as rt:
        rt.ready, rt.serial_offset = ready, ready.offset
        machine.save_runtime(rt)
        return read_status(machine, rt, seen_running=True)


def failure_message(machine: Machine, st: Status, headline: str, hint: str | None = None) -> str:
    lines = [f"VM {machine.name!r}: {headline}"]
    if st.reason and st.reason != headline:
        lines.append(f"reason: {st.reason}")
    vmm = st.vmm_log_tail or tail_lines(machine.vmm_log, TAIL)
    serial = st.serial_log_tail or tail_lines(machine.serial_log, TAIL)
    lines.append(f"--- last lines of {machine.vmm_log} ---")
    lines += vmm or ["(empty)"]
    lines.append(f"--- last lines of {machine.serial_log} ---")
    lines += serial or ["(empty)"]
    hint = hint or st.hint
    if hint:
        lines.append(f"hint: {hint}")
    if st.pid is not None and st.state not in (State.STOPPED, State.CREATED):
        lines.append(f"the VMM (pid {st.pid}) is still running: `vmkit kill {machine.name}`")
    return "\n".join(lines)
