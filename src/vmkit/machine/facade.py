"""Machine: one VM's lifecycle, the API every front end (CLI, Python users) goes through.

A VM's state is derived from reality each time it is asked for (machine/status.py); stored
facts (readiness seen, how it was stopped) only refine it. Launching is machine/launch.py,
helpers are sidecars.py, hot-plug and ports are machine/devices.py and machine/published.py,
snapshot/restore/migrate are snapshot_ops.py: each uses only this class's public methods.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from vmkit import hostinfo, sidecars
from vmkit.access.api import GuestAccess
from vmkit.drivers.abilities import (
    ability,
)
from vmkit.drivers.base import Control, LaunchPlan
from vmkit.errors import (
    InvalidInput,
    NotSupported,
    VMFailed,
    VmkitError,
    VMStateError,
)
from vmkit.machine import verbs
from vmkit.machine.status import Status, broken_reason
from vmkit.machine.stopping import StopResult
from vmkit.machine.view import MachineView
from vmkit.model import (
    CONTROL_WAIT,
    LIVE_STATES,
    RuntimeRecord,
    State,
    StopInfo,
)
from vmkit.process import ProcessRef
from vmkit.store import LockBusy

if TYPE_CHECKING:
    from vmkit.machine.host import Host
    from vmkit.snapshots import Snapshot
    from vmkit.spec import MachineSpec

A = TypeVar("A")


class Machine(MachineView, GuestAccess):  # exec, cp, ssh_command: access/api
    """One VM in the store: its records and status (MachineView) and every verb. Cheap to
    construct. machine.json is read once per Machine (it does not change after create);
    runtime.json and the VMM are read on every call."""

    def __init__(self, host: Host, name: str):
        self.host = host
        super().__init__(host.store, name)
        self.spare_wanted = False  # plan() keyed a tiny guest's initrd: make the next one

    @property
    def spec(self) -> MachineSpec:
        from vmkit.spec import spec_from_dict

        return spec_from_dict(self.spec_json, check_files=False)

    def update_runtime(self, wait: bool = True, **changes: Any) -> bool:
        """Merge `changes` (runtime.json keys, JSON values) under the VM lock; with
        `wait=False`, skip (False) when another vmkit holds the lock."""
        try:
            with self.locked(120.0 if wait else 0.0) as rt:
                self.save_runtime(RuntimeRecord.from_json({**rt.to_json(), **changes}))
        except LockBusy:
            return False
        return True

    # ---- lifecycle ---------------------------------------------------------------------
    def plan(self) -> LaunchPlan:
        """What `start` would run (the exact argv); writes the tiny guest's keyed initrd."""
        from vmkit.access.boot import boot_spec

        spec = self.spec
        driver = self.driver
        driver.check(spec)
        accel = hostinfo.resolve_accelerator(spec.accelerator, spec.arch)
        keyed = boot_spec(spec, self.dir, self.store.home, write=True)
        self.spare_wanted = keyed is not spec
        return driver.plan(keyed, self.context(accel))

    def start(self) -> LaunchPlan:
        """Launch the VMM detached and return once its control socket answers."""
        from vmkit.machine.launch import start

        return start(self)

    def launch(self, plan: LaunchPlan, **origin: Any) -> ProcessRef:
        """Launch `plan` (restore, incoming migration) and record `origin` facts with it
        (restored_from, migrated_from, an inherited `ready`); the caller holds the lock."""
        from vmkit.machine.launch import launch

        return launch(self, plan, origin)

    @overload
    def wait_control(self, proc: ProcessRef) -> Control: ...

    @overload
    def wait_control(self, proc: ProcessRef, clean_exit_ok: bool) -> Control | None: ...

    def wait_control(self, proc: ProcessRef, clean_exit_ok: bool = False) -> Control | None:
        """Until the new VMM's control socket answers; VMFailed if it exits first (None,
        with `clean_exit_ok`, when its guest powered off that fast: the VM is stopped)."""
        from vmkit.filewatch import Watch

        rt = self.runtime()
        ctl = self.control(rt)
        # The control socket comes first in the record (the launch tag): sleep until it
        # appears or the VMM exits; once it exists it may be bound but not yet listening.
        first = next(iter(rt.sockets.values()), None)
        sock = Path(first) if first else self.dir / "no-control-socket"
        deadline = time.monotonic() + CONTROL_WAIT
        with Watch(sock, proc.pid) as watch:
            while (now := time.monotonic()) < deadline:
                if proc.wait_gone(0):
                    st = self.status()
                    if clean_exit_ok and st.state == State.STOPPED:
                        return None
                    raise VMFailed(self.failure_message(st, "the VMM exited during start"))
                if ctl.state(timeout=1.0) is not None:
                    return ctl
                if first is None or not watch.event_driven:
                    time.sleep(0.02)  # nothing to watch (a VMM driven through its CLI)
                elif sock.exists():
                    time.sleep(0.005)
                else:
                    watch.wait(min(deadline - now, 1.0))
        raise VMFailed(
            f"VM {self.name!r}: the VMM is running but its control socket did not answer "
            f"within {CONTROL_WAIT:.0f}s; see `vmkit logs --vmm {self.name}`"
        )

    def wait_ready(self, timeout: float | None = None, poll: float = 0.02) -> Status:
        """Block until the guest prints its readiness line; VMFailed/ReadinessTimeout if not."""
        from vmkit.machine import waiting

        return waiting.wait_ready(self, timeout, poll)

    def inherit_readiness(self, ready: dict[str, Any], source: str) -> None:
        """A restored copy that cannot announce itself keeps its snapshot's readiness."""
        self.update_runtime(
            ready={**ready, "at": time.time(), "offset": 0, "inherited_from": source}
        )

    def announced_readiness(self, ip: str | None) -> None:
        """A restored copy's agent answered on its control port: that answer is its
        readiness (its console line may follow; a follower starts after what is logged)."""
        log = self.serial_log
        offset = log.stat().st_size if log.exists() else 0
        self.update_runtime(
            ready={"ip": ip, "at": time.time(), "offset": offset}, serial_offset=offset
        )

    def failure_message(self, st: Status, headline: str, hint: str | None = None) -> str:
        """`headline`, the reason, the last lines of both logs, the hint, what still runs."""
        from vmkit.machine import waiting

        return waiting.failure_message(self, st, headline, hint)

    def stop(self, timeout: float = 30.0) -> StopResult:
        """ACPI power button -> wait `timeout` -> hard stop -> SIGTERM -> SIGKILL; says which
        step ended it."""
        from vmkit.machine import stopping

        return stopping.stop(self, timeout)

    def kill(self) -> StopResult:
        from vmkit.machine import stopping

        return stopping.kill(self)

    def mark_ended(self, rt: RuntimeRecord, proc: ProcessRef, requested: str, step: str) -> None:
        """The VMM of `rt` is gone, ended by `vmkit requested`: record how, and release its
        sockets and sidecars (the caller holds the lock)."""
        from vmkit.machine.status import exit_info

        if rt.pid is None:  # adopted from its launch tag
            rt.pid, rt.create_time = proc.pid, proc.create_time
        rt.exit = exit_info(self, rt)
        rt.stopping = False
        rt.stop = StopInfo(requested, step, time.time())
        self.save_runtime(rt)
        self.remove_sockets(rt)
        self.release_sidecars()

    @staticmethod
    def remove_sockets(rt: RuntimeRecord) -> list[str]:
        """The VMM's sockets, and the ports it bound for hot-plugged switch NICs; returns
        the sockets that were there."""
        removed = []
        ports = [str(e["port"]) for e in rt.hotplug.values() if e.get("port")]
        for path in [*rt.sockets.values(), *ports]:
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
                removed.append(path)
        for path in rt.sockets.values():
            Path(f"{path}.lock").unlink(missing_ok=True)  # Cloud Hypervisor's, next to its API
        return removed

    def release_sidecars(
        self, records: list[Any] | None = None, with_switches: bool = True
    ) -> None:
        """Stop this VM's sidecars and (`with_switches`) release its switch leases; a
        switch stops when no other live VM uses it."""
        rt = self.runtime()
        sidecars.stop_all(rt.helpers if records is None else records)
        if records is None:  # hot-plugged shares' virtiofsd (and sockets) go with the VM
            from vmkit.machine import devices

            for entry in rt.hotplug.values():
                with contextlib.suppress(Exception):
                    devices.release(entry)
        if not with_switches:
            return
        from vmkit.net import switches

        names = set(switches.names_of(self.spec_json))
        names |= {str(e["switch"]) for e in rt.hotplug.values() if e.get("switch")}
        for name in sorted(names):
            with contextlib.suppress(VmkitError):
                switches.release(self.store, name, self.name)

    def delete(self, force: bool = False) -> None:
        """Remove the VM; refuses a running one unless `force` (then it is killed first)."""
        from vmkit.machine import stopping

        stopping.delete(self, force)

    # ---- verbs on a running VM (each checks the driver's ability before touching it) ----
    def require(self, protocol: type[A], verb: str) -> type[A]:
        """Refuse `verb` unless this driver's Control implements `protocol`."""
        driver = self.driver
        if not issubclass(driver.control_class, protocol):
            raise NotSupported(
                f"the {driver.name} driver cannot {verb} (VM {self.name!r}); "
                "see docs/capabilities.md for what each driver can do"
            )
        return protocol

    def live_runtime(self, verb: str, states: tuple[State, ...] = LIVE_STATES) -> RuntimeRecord:
        """runtime.json of a VM whose VMM is up and in one of `states` (caller holds the lock)."""
        st = self.status()
        if st.state not in states:
            hint = f"start it with `vmkit start {self.name}`" if not st.alive else ""
            raise VMStateError(
                f"cannot {verb} VM {self.name!r}: it is {st.state}"
                + (f" (needs {' or '.join(states)}); {hint}" if hint else "")
            )
        return self.runtime()

    def live_control(
        self, protocol: type[A], verb: str, states: tuple[State, ...] = LIVE_STATES
    ) -> tuple[A, RuntimeRecord]:
        """The running VMM's Control as `protocol`, with its runtime (caller holds the lock)."""
        self.require(protocol, verb)
        rt = self.live_runtime(verb, states)
        ctl = ability(self.control(rt), protocol)
        assert ctl is not None  # require() checked the class
        return ctl, rt

    def pause(self) -> Status:
        """Freeze the guest's vCPUs (the VMM keeps its memory); `resume` continues."""
        return verbs.pause(self)

    def resume(self) -> Status:
        return verbs.resume(self)

    def reboot(self) -> Status:
        """Reset the guest; readiness is awaited afresh (`vmkit wait`)."""
        return verbs.reboot(self)

    def resize(self, cpus: int | None = None, memory: int | None = None) -> Status:
        """Change vCPUs / memory of the running VM, within the spec's max_cpus / max_memory."""
        return verbs.resize(self, cpus, memory)

    def counters(self) -> dict[str, Any]:
        return verbs.counters(self)

    def attach_disk(
        self, path: Path, readonly: bool = False, fmt: str | None = None, force: bool = False
    ) -> dict[str, Any]:
        """Hot-plug a disk image; returns its record (with the device id for `detach`).
        `force`: even a device, another user's file, hard-linked or a system file."""
        from vmkit.machine import devices

        return devices.attach_disk(self, path, readonly, fmt, force)

    def attach_net(
        self,
        mode: str = "user",
        mac: str | None = None,
        tap: str | None = None,
        netns: str | None = None,
        bridge: str | None = None,
        switch: str | None = None,
    ) -> dict[str, Any]:
        """Hot-plug a NIC: NAT, an existing TAP (optionally in a netns / on a bridge), or a
        port on vmkit's switch `switch` (started if it is not running)."""
        from vmkit.machine import devices

        return devices.attach_net(self, mode, mac, tap, netns, bridge, switch)

    def attach_share(self, host_dir: Path, tag: str, readonly: bool = False) -> dict[str, Any]:
        """Hot-plug a virtio-fs share: a virtiofsd sidecar, then the device."""
        from vmkit.machine import devices

        return devices.attach_share(self, host_dir, tag, readonly)

    def detach(self, device_id: str) -> dict[str, Any]:
        """Unplug a hot-plugged disk, NIC or share (the guest must release it)."""
        from vmkit.machine import devices

        return devices.detach(self, device_id)

    def console_socket(self) -> Path:
        """The running VM's interactive serial console socket."""
        if not self.driver.features.console:
            raise NotSupported(
                f"the {self.driver_name} driver cannot attach an interactive console (VM "
                f"{self.name!r}); follow `vmkit logs -f {self.name}`"
            )
        st = self.status()
        if not st.alive:
            raise InvalidInput(f"VM {self.name!r} is {st.state}; start it first")
        sock = self.runtime().sockets.get("console")
        if not sock:
            raise VmkitError(f"VM {self.name!r} has no console socket")
        return Path(sock)

    def relayed_ports(self) -> list[tuple[str, int, int]]:
        """Published ports the VMM does not forward itself: vmkit's relay serves them."""
        from vmkit.net import portfwd

        return portfwd.proxied(self.spec_json, self.driver)

    def ports(self) -> list[dict[str, Any]]:
        """Published ports: those in the spec and those added while running."""
        from vmkit.machine import published

        return published.ports(self)

    def publish(self, value: str) -> dict[str, Any]:
        """Forward a host port to the running guest (its first NAT NIC) until it stops."""
        from vmkit.machine import published

        return published.publish(self, value)

    def unpublish(self, value: str) -> dict[str, Any]:
        from vmkit.machine import published

        return published.unpublish(self, value)

    def snapshot(self, name: str) -> Snapshot:
        """Save RAM + device state and clone the writable disks at the same instant."""
        from vmkit import snapshot_ops

        return snapshot_ops.create_snapshot(self, name)

    def migrate(self, to: str, timeout: float = 600.0) -> Machine:
        """Live-migrate to a new VM `to` (a second VMM on this host); this one stops."""
        from vmkit import snapshot_ops

        return snapshot_ops.migrate(self, to, timeout)

    def inspect(self) -> dict[str, Any]:
        """Everything vmkit knows of this VM: record, status, runtime, the VMM's own view."""
        from vmkit.machine.status import inspect

        if broken_reason(self) is not None:
            from vmkit.store import MACHINE_FILE

            return {
                "name": self.name,
                "driver": None,
                "status": self.status().to_json(),
                "runtime": self.runtime().to_json(),
                "paths": {"dir": str(self.dir), "machine": str(self.dir / MACHINE_FILE)},
            }
        return inspect(self)
