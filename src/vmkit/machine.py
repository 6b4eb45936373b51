"""Machine and Host: the lifecycle API every front end (CLI, Python users) goes through.

A VM's state is derived from reality each time it is asked for: the recorded VMM pid must
exist with the recorded start time, and its control socket must answer. Stored facts
(readiness seen, how it was stopped, why it exited) only refine that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit import hostinfo
from vmkit.drivers import get_driver, resolve_driver_name
from vmkit.drivers.base import Driver, LaunchContext, LaunchPlan
from vmkit.errors import (
    InvalidInput,
    NotFound,
    NotSupported,
    ReadinessTimeout,
    SpecError,
    VMFailed,
    VmkitError,
    VMStateError,
)
from vmkit.process import (
    ProcessRef,
    describe_exit,
    reap_child,
    spawn_detached,
    wait_for_path,
)
from vmkit.readiness import ReadinessFollower, tail_lines
from vmkit.store import LockBusy, Store

if TYPE_CHECKING:
    from vmkit.snapshots import Snapshot, SnapshotStore
    from vmkit.spec import MachineSpec

ALIVE_STATES = ("starting", "running", "ready", "paused", "stopping", "unresponsive")
LIVE_STATES = ("running", "ready", "paused")
CONTROL_WAIT = 30.0  # seconds for a new VMM's control socket to answer
TAIL = 20


@dataclass
class Status:
    name: str
    state: str
    driver: str
    pid: int | None = None
    ip: str | None = None
    accelerator: str | None = None
    started_at: float | None = None
    ready_at: float | None = None
    reason: str | None = None
    hint: str | None = None
    vmm_log_tail: list[str] = field(default_factory=list)
    serial_log_tail: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES or (self.state == "failed" and self.pid is not None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StopResult:
    name: str
    step: (
        str  # acpi | a driver's hard stop (e.g. vm.shutdown) | sigterm | sigkill | already-stopped
    )
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Machine:
    """One VM in the store. Cheap to construct; every call reads the record afresh."""

    def __init__(self, host: Host, name: str):
        self.host = host
        self.store = host.store
        self.name = name
        if not self.store.exists(name):
            raise NotFound(f"no VM named {name!r} (see `vmkit ls`)")

    # ---- records and paths -------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.store.vm_dir(self.name)

    @property
    def record(self) -> dict[str, Any]:
        return self.store.load_machine(self.name)

    @property
    def spec(self) -> MachineSpec:
        from vmkit.spec import spec_from_dict

        return spec_from_dict(self.record["spec"], check_files=False)

    @property
    def driver_name(self) -> str:
        return str(self.record["driver"])

    @property
    def driver(self) -> Driver:
        return get_driver(self.driver_name, self.record["spec"].get("arch"))

    @property
    def serial_log(self) -> Path:
        configured = self.record["spec"].get("serial_log")
        return Path(configured) if configured else self.dir / "serial.log"

    @property
    def vmm_log(self) -> Path:
        return self.dir / "vmm.log"

    def _context(self, accelerator: str) -> LaunchContext:
        from vmkit.net import switches

        return LaunchContext(
            vm_dir=self.dir,
            serial_log=self.serial_log,
            events_log=self.dir / "vmm-events.log",
            sockets={
                role: self.store.socket_path(self.name, suffix)
                for role, suffix in self.driver.socket_roles.items()
            },
            accelerator=accelerator,
            switch_sockets={
                name: switches.socket_path(self.store, name)
                for name in switches.names_of(self.record["spec"])
            },
        )

    def runtime(self) -> dict[str, Any]:
        return self.store.load_runtime(self.name)

    @contextlib.contextmanager
    def _locked(self, timeout: float = 120.0) -> Iterator[None]:
        with self.store.vm_lock(self.name, timeout):
            yield

    def _update_runtime(self, changes: dict[str, Any], wait: bool = True) -> bool:
        """Merge `changes` into runtime.json under the VM lock (or skip if busy and not wait)."""
        try:
            with self._locked(120.0 if wait else 0.0):
                self._merge_runtime_unlocked(changes)
        except LockBusy:
            return False
        return True

    def _merge_runtime_unlocked(self, changes: dict[str, Any]) -> None:
        rt = self.runtime()
        rt.update(changes)
        self.store.save_runtime(self.name, rt)

    @staticmethod
    def _proc(rt: dict[str, Any]) -> ProcessRef | None:
        if "pid" not in rt:
            return None
        return ProcessRef(int(rt["pid"]), float(rt.get("create_time", 0.0)))

    # ---- status ------------------------------------------------------------------------
    def status(self) -> Status:
        rt = self.runtime()
        st = Status(self.name, "created", self.driver_name)
        proc = self._proc(rt)
        if proc is None:
            return st
        st.accelerator = rt.get("accelerator")
        st.started_at = rt.get("started_at")
        if proc.alive():
            st.pid = proc.pid
            return self._status_alive(st, rt)
        return self._status_gone(st, rt, proc)

    def _status_alive(self, st: Status, rt: dict[str, Any]) -> Status:
        ready = rt.get("ready")
        if ready is None:
            ready = self._follow_readiness(rt)
        if ready is not None:
            st.ip, st.ready_at = ready.get("ip"), ready.get("at")
        if rt.get("stopping"):
            st.state = "stopping"
            return st
        vmm_state = self.driver.control_state(rt.get("sockets", {}))
        if vmm_state is None:
            young = time.time() - float(rt.get("started_at", 0)) < CONTROL_WAIT
            st.state = "starting" if young else "unresponsive"
            if not young:
                st.reason = "the VMM process is alive but its control socket does not answer"
        elif vmm_state == "running":
            st.state = "ready" if ready is not None else "running"
        else:
            st.state = vmm_state
        if st.ip is None and st.state in ("running", "ready"):
            st.ip = self.driver.guest_ip(self.record["spec"])
        failure = rt.get("readiness_failure")
        if failure and ready is None and st.state in ("running", "starting"):
            st.state, st.reason, st.hint = "failed", failure["reason"], failure.get("hint")
            st.vmm_log_tail = tail_lines(self.vmm_log, TAIL)
            st.serial_log_tail = tail_lines(self.serial_log, TAIL)
        return st

    def _follow_readiness(self, rt: dict[str, Any]) -> dict[str, Any] | None:
        """Look for the marker past the last offset seen (or ask the driver, for guests
        that print none); record it when found."""
        sockets = {k: str(v) for k, v in rt.get("sockets", {}).items()}
        probe = self.driver.probe_readiness(self.record["spec"], sockets, self.dir)
        if probe is not None:
            if not probe.ready:
                return None
            ready = {"ip": probe.ip, "at": time.time(), "offset": int(rt.get("serial_offset", 0))}
            self._update_runtime({"ready": ready}, wait=False)
            return ready
        follower = ReadinessFollower(
            self.serial_log,
            self.record["spec"]["readiness"]["marker"],
            offset=int(rt.get("serial_offset", 0)),
        )
        found = follower.poll()
        if found is None:
            self._update_runtime({"serial_offset": follower.offset}, wait=False)
            return None
        ready = {"ip": found.ip, "at": time.time(), "offset": found.offset}
        self._update_runtime({"ready": ready, "serial_offset": found.offset}, wait=False)
        return ready

    def _status_gone(self, st: Status, rt: dict[str, Any], proc: ProcessRef) -> Status:
        exit_info = rt.get("exit")
        if exit_info is None:
            exit_info = self._exit_info(rt, proc)
            self._update_runtime({"exit": exit_info}, wait=False)
        stop = rt.get("stop")
        if stop is not None:
            st.state = "stopped"
            st.reason = f"stopped by `vmkit {stop['requested']}` ({stop['step']})"
        elif exit_info["clean"]:
            st.state = "stopped"
            st.reason = exit_info["reason"]
        else:
            st.state = "failed"
            st.reason = exit_info["reason"]
            st.hint = hostinfo.accel_hint(str(rt.get("accelerator")))
            st.vmm_log_tail = tail_lines(self.vmm_log, TAIL)
            st.serial_log_tail = tail_lines(self.serial_log, TAIL)
        return st

    def _exit_info(self, rt: dict[str, Any], proc: ProcessRef) -> dict[str, Any]:
        status = reap_child(proc.pid)
        cause = self.driver.exit_cause(self._context(str(rt.get("accelerator", "tcg"))))
        if cause is not None and cause.clean:
            return {"clean": True, "status": status, "reason": f"VMM exited: {cause.reason}"}
        why = describe_exit(status)
        if cause is not None:
            why += f" after a {cause.reason}"
        else:
            why += "; no shutdown was requested (killed or crashed)"
        return {"clean": False, "status": status, "reason": f"VMM exited unexpectedly: {why}"}

    # ---- lifecycle ---------------------------------------------------------------------
    def plan(self) -> LaunchPlan:
        """What `start` would run (the exact argv), without running anything."""
        spec = self.spec
        driver = self.driver
        driver.check(spec)
        accel = hostinfo.resolve_accelerator(spec.accelerator, spec.arch)
        return driver.plan(spec, self._context(accel))

    def start(self) -> LaunchPlan:
        """Launch the VMM detached and return once its control socket answers."""
        with self._locked():
            self._check_not_running()
            from vmkit.spec import missing_files

            spec = self.spec
            problems = missing_files(spec)
            if problems:
                raise SpecError(problems)
            self.driver.find_binary()
            self.driver.host_limits(spec, self.host.running_specs(self.driver_name))
            plan = self.plan()
            self.driver.prepare(spec, self._context(plan.accelerator))
            proc = self._launch_unlocked(plan)
        try:
            self._wait_control(proc)
            if plan.api_requests:
                try:
                    self.driver.after_launch({k: str(v) for k, v in plan.sockets.items()}, plan)
                except VmkitError as exc:
                    self._abandon_launch(proc, f"the VMM could not create the VM: {exc}")
                    raise
        except VmkitError:
            if proc.wait_gone(0):
                self._release_helpers()
            raise
        return plan

    def _abandon_launch(self, proc: ProcessRef, reason: str) -> None:
        """An API-driven VMM is up without a VM: kill it, and keep why as the VM's failure."""
        proc.signal(signal.SIGKILL)
        proc.wait_gone(10)
        reap_child(proc.pid)
        self._update_runtime({"exit": {"clean": False, "status": None, "reason": reason}})

    def _check_not_running(self) -> None:
        st = self.status()
        if st.alive:
            raise VMStateError(
                f"VM {self.name!r} is already {st.state} (pid {st.pid}); "
                f"stop it first with `vmkit stop {self.name}`"
            )

    def _launch_unlocked(self, plan: LaunchPlan, extra: dict[str, Any] | None = None) -> ProcessRef:
        """Spawn `plan.argv` detached and record it in runtime.json (caller holds the lock)."""
        driver = self.driver
        for sock in plan.sockets.values():
            sock.unlink(missing_ok=True)  # stale: the VMM that owned it is gone
        ctx = self._context(plan.accelerator)
        ctx.events_log.unlink(missing_ok=True)
        with self.vmm_log.open("ab") as log:
            log.write(f"--- vmkit: starting {self.name} at {time.ctime()} ---\n".encode())
        from vmkit.net import ports, switches

        ports.check_free(self.record["spec"])
        nets = self.record["spec"].get("networks", [])
        helpers = [
            switches.ensure(
                self.store,
                name,
                self.name,
                [
                    str(plan.sockets[f"net{i}"])
                    for i, n in enumerate(nets)
                    if n.get("switch") == name and f"net{i}" in plan.sockets
                ],
            )
            for name in switches.names_of(self.record["spec"])
        ]
        fds: list[int] = []
        try:
            helpers += self._start_shares(plan)
            helpers += self._start_relay()
            argv, fds, taps = self._open_taps(plan.argv)
            helpers += taps
            proc = spawn_detached(argv, self.vmm_log, self.dir, tuple(fds))
        except BaseException:
            self._release_helpers(helpers)
            raise
        finally:
            for fd in fds:
                os.close(fd)  # QEMU has its own copies now
        self.store.save_runtime(
            self.name,
            {
                "driver": driver.name,
                "accelerator": plan.accelerator,
                "argv": argv,
                "sockets": {k: str(v) for k, v in plan.sockets.items()},
                "pid": proc.pid,
                "create_time": proc.create_time,
                "started_at": time.time(),
                "serial_offset": 0,
                "ready": None,
                "stop": None,
                "exit": None,
                "helpers": helpers,
                **(extra or {}),
            },
        )
        return proc

    def _open_taps(self, argv: list[str]) -> tuple[list[str], list[int], list[dict[str, Any]]]:
        """Open each TAP NIC (made if missing) and put its fd into the argv."""
        from vmkit.drivers.qemu import tap_fd_placeholder
        from vmkit.net import tap

        fds: list[int] = []
        helpers: list[dict[str, Any]] = []
        try:
            for i, net in enumerate(self.record["spec"].get("networks", [])):
                if net.get("mode") != "tap":
                    continue
                fd, created = tap.open_tap(net["tap"], net.get("netns"), net.get("bridge"))
                helpers.append(
                    {
                        "kind": "tap",
                        "name": net["tap"],
                        "netns": net.get("netns"),
                        "created": created,
                    }
                )
                marker = tap_fd_placeholder(i)
                if not any(marker in a for a in argv):
                    # The VMM takes this TAP later (Cloud Hypervisor: vm.add-net with an fd):
                    # an fd inherited now would hold the single-queue TAP and make that fail.
                    os.close(fd)
                    continue
                fds.append(fd)
                argv = [a.replace(marker, str(fd)) for a in argv]
        except BaseException:
            for fd in fds:
                os.close(fd)
            self._release_helpers(helpers)
            raise
        return argv, fds, helpers

    def _start_relay(self) -> list[dict[str, Any]]:
        """vmkit's port relay for published ports the VMM does not forward (net/portfwd),
        listening before this returns."""
        import sys

        from vmkit.net import portfwd

        maps = portfwd.proxied(self.record["spec"], self.driver)
        if not maps:
            return []
        ready = self.dir / "portfwd.ready"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "vmkit.net.portfwd", "--home", str(self.store.home)]
        argv += ["--vm", self.name, "--ready", str(ready)]
        for host_ip, host, guest in maps:
            argv += ["--map", f"{host_ip}:{host}:{guest}"]
        proc = spawn_detached(argv, self.dir / "portfwd.log", self.dir)
        if not wait_for_path(proc, ready, 10.0):
            proc.signal(signal.SIGKILL)
            log = tail_lines(self.dir / "portfwd.log", TAIL)
            raise VMFailed(f"VM {self.name!r}: the port relay did not start:\n" + "\n".join(log))
        return [{"kind": "portfwd", "pid": proc.pid, "create_time": proc.create_time}]

    def _start_shares(self, plan: LaunchPlan) -> list[dict[str, Any]]:
        """A virtiofsd per share, listening before the VMM connects."""
        from vmkit.shares import virtiofsd

        started: list[dict[str, Any]] = []
        try:
            for i, share in enumerate(self.record["spec"].get("shares", [])):
                sock = plan.sockets.get(f"fs{i}")
                if sock is None:
                    continue  # the VMM serves virtio-fs itself (vfkit, krunkit)
                log = self.dir / f"virtiofsd-{share['tag']}.log"
                started.append(virtiofsd.start(share, sock, log, self.dir))
        except BaseException:
            self._release_helpers(started)
            raise
        return started

    def _release_helpers(
        self, helpers: list[dict[str, Any]] | None = None, with_switches: bool = True
    ) -> None:
        """Stop this VM's sidecars and (`with_switches`) the switches no other live VM uses."""
        from vmkit.shares import virtiofsd

        if helpers is None:
            helpers = self.runtime().get("helpers") or []
        for helper in helpers:
            if helper.get("kind") == "virtiofsd":
                virtiofsd.stop(ProcessRef(int(helper["pid"]), float(helper["create_time"])))
            elif helper.get("kind") == "portfwd":
                relay = ProcessRef(int(helper["pid"]), float(helper["create_time"]))
                relay.signal(signal.SIGTERM)
                if not relay.wait_gone(3):
                    relay.signal(signal.SIGKILL)
            elif helper.get("kind") == "tap" and helper.get("created"):
                from vmkit.net import tap

                with contextlib.suppress(Exception):
                    tap.delete_tap(str(helper["name"]), helper.get("netns"))
        from vmkit.net import switches

        if not with_switches:
            return
        hot = self.runtime().get("hotplug") or {}
        names = set(switches.names_of(self.record["spec"]))
        names |= {str(e["switch"]) for e in hot.values() if e.get("switch")}
        for name in sorted(names):
            with contextlib.suppress(VmkitError):
                switches.release(self.store, name, self.name)

    def _wait_control(self, proc: ProcessRef) -> None:
        sockets = {k: str(v) for k, v in self.runtime().get("sockets", {}).items()}
        deadline = time.monotonic() + CONTROL_WAIT
        while time.monotonic() < deadline:
            if not proc.wait_gone(0):
                if self.driver.control_state(sockets, timeout=1.0) is not None:
                    return
            else:
                raise VMFailed(self._failure_message(self.status(), "the VMM exited during start"))
            time.sleep(0.02)
        raise VMFailed(
            f"VM {self.name!r}: the VMM is running but its control socket did not answer "
            f"within {CONTROL_WAIT:.0f}s; see `vmkit logs --vmm {self.name}`"
        )

    def wait_ready(self, timeout: float | None = None, poll: float = 0.02) -> Status:
        """Block until the guest prints its readiness line; VMFailed/ReadinessTimeout if not."""
        spec = self.spec
        rt = self.runtime()
        proc = self._proc(rt)
        if proc is None:
            raise VMStateError(f"VM {self.name!r} was never started; run `vmkit start {self.name}`")
        if rt.get("ready") is not None and proc.alive():
            return self.status()
        limit = spec.readiness.timeout if timeout is None else timeout
        follower = ReadinessFollower(
            self.serial_log, spec.readiness.marker, offset=int(rt.get("serial_offset", 0))
        )
        started = float(rt.get("started_at", time.time()))
        deadline = time.monotonic() + max(0.0, limit - max(0.0, time.time() - started))
        checks = 0
        sockets = {k: str(v) for k, v in rt.get("sockets", {}).items()}
        probe = self.driver.probe_readiness(self.record["spec"], sockets, self.dir)
        while True:
            found = follower.poll()
            if found is not None:
                ready = {"ip": found.ip, "at": time.time(), "offset": found.offset}
                self._update_runtime({"ready": ready, "serial_offset": found.offset})
                return self.status()
            if probe is not None and checks % 10 == 0:
                probe = self.driver.probe_readiness(self.record["spec"], sockets, self.dir)
                if probe is not None and probe.ready:
                    ready = {"ip": probe.ip, "at": time.time(), "offset": follower.offset}
                    self._update_runtime({"ready": ready, "serial_offset": follower.offset})
                    return self.status()
            checks += 1
            if checks % 10 == 0 and proc.wait_gone(0):
                st = self.status()
                raise VMFailed(
                    self._failure_message(st, "the VMM exited before the guest was ready")
                )
            if time.monotonic() >= deadline:
                hint = hostinfo.accel_hint(str(rt.get("accelerator")))
                reason = f"the guest did not print '{spec.readiness.marker} <ip>' within {limit:g}s"
                if probe is not None:
                    reason = f"the guest was not {probe.waiting_for} within {limit:g}s"
                self._update_runtime(
                    {
                        "readiness_failure": {"reason": reason, "hint": hint},
                        "serial_offset": follower.offset,
                    }
                )
                st = self.status()
                raise ReadinessTimeout(self._failure_message(st, reason, hint))
            time.sleep(poll)

    def _failure_message(self, st: Status, headline: str, hint: str | None = None) -> str:
        lines = [f"VM {self.name!r}: {headline}"]
        if st.reason and st.reason != headline:
            lines.append(f"reason: {st.reason}")
        vmm = st.vmm_log_tail or tail_lines(self.vmm_log, TAIL)
        serial = st.serial_log_tail or tail_lines(self.serial_log, TAIL)
        lines.append(f"--- last lines of {self.vmm_log} ---")
        lines += vmm or ["(empty)"]
        lines.append(f"--- last lines of {self.serial_log} ---")
        lines += serial or ["(empty)"]
        hint = hint or st.hint
        if hint:
            lines.append(f"hint: {hint}")
        if st.pid is not None and st.state not in ("stopped", "created"):
            lines.append(f"the VMM (pid {st.pid}) is still running: `vmkit kill {self.name}`")
        return "\n".join(lines)

    def stop(self, timeout: float = 30.0) -> StopResult:
        """ACPI power button -> wait `timeout` -> SIGTERM -> SIGKILL; says which step ended it."""
        t0 = time.monotonic()
        with self._locked(timeout + 60):
            rt = self.runtime()
            proc = self._proc(rt)
            if proc is None or not proc.alive():
                return StopResult(self.name, "already-stopped", 0.0)
            self._merge_runtime_unlocked({"stopping": True})
            step = "sigkill"
            try:
                try:
                    self.driver.request_powerdown(rt.get("sockets", {}))
                    powered = proc.wait_gone(timeout)
                except Exception:
                    powered = proc.wait_gone(0)
                if powered:
                    step = "acpi"
                elif (hard := self._force_shutdown(rt)) is not None and proc.wait_gone(10):
                    step = hard
                elif proc.signal(signal.SIGTERM) and proc.wait_gone(10):
                    step = "sigterm"
                else:
                    proc.signal(signal.SIGKILL)
                    proc.wait_gone(10)
            finally:
                self._finish(rt, proc, "stop", step)
        return StopResult(self.name, step, round(time.monotonic() - t0, 3))

    def _force_shutdown(self, rt: dict[str, Any]) -> str | None:
        try:
            return self.driver.force_shutdown(rt.get("sockets", {}))
        except Exception:
            return None

    def kill(self) -> StopResult:
        t0 = time.monotonic()
        with self._locked():
            rt = self.runtime()
            proc = self._proc(rt)
            if proc is None or not proc.alive():
                return StopResult(self.name, "already-stopped", 0.0)
            proc.signal(signal.SIGKILL)
            proc.wait_gone(10)
            self._finish(rt, proc, "kill", "sigkill")
        return StopResult(self.name, "sigkill", round(time.monotonic() - t0, 3))

    def _finish(self, rt: dict[str, Any], proc: ProcessRef, requested: str, step: str) -> None:
        exit_info = self._exit_info(rt, proc)
        self._merge_runtime_unlocked(
            {
                "stopping": False,
                "stop": {"requested": requested, "step": step, "at": time.time()},
                "exit": exit_info,
            }
        )
        self._remove_sockets(rt)
        self._release_helpers()

    @staticmethod
    def _remove_sockets(rt: dict[str, Any]) -> None:
        for path in rt.get("sockets", {}).values():
            Path(path).unlink(missing_ok=True)

    def delete(self, force: bool = False) -> None:
        """Remove the VM; refuses a running one unless `force` (then it is killed first)."""
        with self._locked():
            rt = self.runtime()
            proc = self._proc(rt)
            if proc is not None and proc.alive():
                if not force:
                    raise VMStateError(
                        f"VM {self.name!r} is running (pid {proc.pid}); stop it first "
                        f"(`vmkit stop {self.name}`) or use `vmkit rm --force {self.name}`"
                    )
                proc.signal(signal.SIGKILL)
                if not proc.wait_gone(10):
                    raise VMFailed(f"VM {self.name!r}: the VMM (pid {proc.pid}) did not die")
            self._remove_sockets(rt)
            self._release_helpers()
            self.store.remove(self.name)

    # ---- advanced verbs (each checks the driver's capability before touching the VM) ----
    def require(self, capability: str, verb: str) -> Driver:
        driver = self.driver
        if not getattr(driver.capabilities, capability):
            raise NotSupported(
                f"the {driver.name} driver cannot {verb} (VM {self.name!r}); "
                "see docs/capabilities.md for what each driver can do"
            )
        return driver

    def live_runtime(self, verb: str, states: tuple[str, ...] = LIVE_STATES) -> dict[str, Any]:
        """runtime.json of a VM whose VMM is up and in one of `states` (caller holds the lock)."""
        st = self.status()
        if st.state not in states:
            hint = f"start it with `vmkit start {self.name}`" if not st.alive else ""
            raise VMStateError(
                f"cannot {verb} VM {self.name!r}: it is {st.state}"
                + (f" (needs {' or '.join(states)}); {hint}" if hint else "")
            )
        return self.runtime()

    def pause(self) -> Status:
        """Freeze the guest's vCPUs (the VMM keeps its memory); `resume` continues."""
        driver = self.require("pause", "pause")
        with self._locked():
            rt = self.live_runtime("pause", ("running", "ready", "paused"))
            if self.status().state != "paused":
                driver.pause(rt["sockets"])
        return self.status()

    def resume(self) -> Status:
        driver = self.require("pause", "resume")
        with self._locked():
            rt = self.live_runtime("resume", ("running", "ready", "paused"))
            driver.resume(rt["sockets"])
        return self.status()

    def reboot(self) -> Status:
        """Reset the guest; readiness is awaited afresh (`vmkit wait`)."""
        driver = self.require("reboot", "reboot")
        with self._locked():
            rt = self.live_runtime("reboot")
            offset = self.serial_log.stat().st_size if self.serial_log.exists() else 0
            driver.reboot(rt["sockets"])
            self._merge_runtime_unlocked(
                {
                    "ready": None,
                    "serial_offset": offset,
                    "readiness_failure": None,
                    "started_at": time.time(),
                }
            )
        return self.status()

    def attach_disk(
        self, path: Path, readonly: bool = False, fmt: str | None = None
    ) -> dict[str, Any]:
        """Hot-plug a disk image; returns its record (with the device id for `detach`)."""
        from vmkit import hotplug

        driver = self.require("hotplug_disk", "hot-plug disks")
        disk = hotplug.disk_from_path(path, readonly, fmt)
        with self._locked():
            rt = self.live_runtime("hot-plug a disk into")
            devices = dict(rt.get("hotplug", {}))
            device_id = hotplug.next_id(devices, "hd")
            driver.attach_disk(rt["sockets"], disk, device_id)
            entry: dict[str, Any] = {
                "kind": "disk",
                "path": str(disk.file),
                "format": disk.format,
                "readonly": disk.readonly,
            }
            devices[device_id] = entry
            self._merge_runtime_unlocked({"hotplug": devices})
        return {"id": device_id, **entry}

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
        from vmkit import hotplug
        from vmkit.net import switches
        from vmkit.net.mac import stable_mac

        driver = self.require("hotplug_net", "hot-plug NICs")
        net = hotplug.network(mode, mac, tap, netns, bridge, switch)
        with self._locked():
            rt = self.live_runtime("hot-plug a NIC into")
            devices = dict(rt.get("hotplug", {}))
            device_id = hotplug.next_id(devices, "hn")
            mac = net.mac or stable_mac(self.name, 100 + int(device_id[2:]))
            entry: dict[str, Any] = {"kind": "net", "mode": net.mode, "mac": mac}
            link = None
            if net.mode == "switch":
                assert net.switch is not None
                port = self.store.socket_path(self.name, device_id)
                info = switches.add_port(self.store, net.switch, self.name, str(port))
                link = (Path(info["socket"]), port)
                entry.update(switch=net.switch, port=str(port))
            try:
                driver.attach_net(rt["sockets"], net, device_id, mac, link)
            except BaseException:
                if link is not None:
                    self._drop_switch_port(entry, devices)
                raise
            if net.mode == "tap":
                entry.update(tap=net.tap, netns=net.netns)
            devices[device_id] = entry
            self._merge_runtime_unlocked({"hotplug": devices})
        return {"id": device_id, **entry}

    def attach_share(self, host_dir: Path, tag: str, readonly: bool = False) -> dict[str, Any]:
        """Hot-plug a virtio-fs share: a virtiofsd sidecar, then the device."""
        from vmkit import hotplug
        from vmkit.shares import virtiofsd
        from vmkit.spec import Share

        driver = self.require("hotplug_share", "hot-plug shares")
        try:
            share = Share(host=host_dir.expanduser().absolute(), tag=tag, readonly=readonly)
        except ValueError as exc:
            raise InvalidInput(f"share: {exc}") from None
        if not share.host.is_dir():
            raise InvalidInput(f"share: {str(share.host)!r} is not a directory")
        with self._locked():
            rt = self.live_runtime("hot-plug a share into")
            devices = dict(rt.get("hotplug", {}))
            device_id = hotplug.next_id(devices, "hs")
            sock = self.store.socket_path(self.name, device_id)
            helper = virtiofsd.start(
                share.model_dump(mode="json"), sock, self.dir / f"virtiofsd-{tag}.log", self.dir
            )
            try:
                driver.attach_share(rt["sockets"], tag, str(sock), device_id)
            except BaseException:
                virtiofsd.stop(ProcessRef(int(helper["pid"]), float(helper["create_time"])))
                raise
            entry: dict[str, Any] = {"kind": "share", "tag": tag, "host": str(share.host)}
            entry["readonly"], entry["helper"] = readonly, helper
            devices[device_id] = entry
            self._merge_runtime_unlocked({"hotplug": devices})
        return {"id": device_id, **entry}

    def detach(self, device_id: str) -> dict[str, Any]:
        """Unplug a hot-plugged disk or NIC (the guest must release it)."""
        with self._locked():
            rt = self.live_runtime("unplug a device from")
            devices = dict(rt.get("hotplug", {}))
            entry = devices.get(device_id)
            if entry is None:
                known = ", ".join(sorted(devices)) or "none"
                raise InvalidInput(
                    f"VM {self.name!r} has no hot-plugged device {device_id!r} (has: {known})"
                )
            if entry["kind"] == "disk":
                self.require("hotplug_disk", "unplug disks").detach_disk(rt["sockets"], device_id)
            elif entry["kind"] == "share":
                from vmkit.shares import virtiofsd

                drv = self.require("hotplug_share", "unplug shares")
                drv.detach_share(rt["sockets"], device_id)
                h = entry["helper"]
                virtiofsd.stop(ProcessRef(int(h["pid"]), float(h["create_time"])))
            else:
                self.require("hotplug_net", "unplug NICs").detach_net(rt["sockets"], device_id)
                if entry.get("switch"):
                    del devices[device_id]
                    self._drop_switch_port(entry, devices)
            devices.pop(device_id, None)
            self._merge_runtime_unlocked({"hotplug": devices})
        return {"id": device_id, **entry}

    def _drop_switch_port(self, entry: dict[str, Any], others: dict[str, Any]) -> None:
        """A hot-plugged switch NIC is gone: its port leaves the switch's lease (and the
        lease goes when no other NIC of this VM is on that switch)."""
        from vmkit.net import switches

        name = str(entry["switch"])
        still = name in switches.names_of(self.record["spec"]) or any(
            e.get("switch") == name for e in others.values()
        )
        with contextlib.suppress(VmkitError):
            switches.drop_port(self.store, name, self.name, str(entry["port"]), still)
        Path(entry["port"]).unlink(missing_ok=True)

    def resize(self, cpus: int | None = None, memory: int | None = None) -> Status:
        """Change vCPUs / memory of the running VM, within the spec's max_cpus / max_memory."""
        driver = self.require("resize", "resize a running VM")
        spec = self.spec
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
        with self._locked():
            rt = self.live_runtime("resize")
            driver.resize(rt["sockets"], cpus, memory)
        return self.status()

    def counters(self) -> dict[str, Any]:
        driver = self.require("counters", "report device counters")
        rt = self.live_runtime("read the counters of")
        return driver.counters(rt["sockets"])

    def ports(self) -> list[dict[str, Any]]:
        """Published ports: those in the spec and those added while running."""
        from vmkit.spec import parse_publish

        out = []
        for i, net in enumerate(self.record["spec"].get("networks", [])):
            for item in net.get("publish", []):
                host_ip, host, guest, proto = parse_publish(item)
                out.append(_port(i, host_ip, host, guest, proto, "spec"))
        rt = self.runtime()
        if self._proc(rt) is not None and self.status().alive:
            out += [dict(p, source="runtime") for p in rt.get("ports", [])]
        return out

    def publish(self, value: str) -> dict[str, Any]:
        """Forward a host port to the running guest (its first NAT NIC) until it stops."""
        from vmkit.net import ports as portmod
        from vmkit.spec import parse_publish

        driver = self.require("publish", "publish ports")
        try:
            host_ip, host, guest, proto = parse_publish(value)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        nats = [
            i
            for i, n in enumerate(self.record["spec"].get("networks", []))
            if n.get("mode") in ("user", "nat")
        ]
        if not nats:
            raise InvalidInput(f"VM {self.name!r} has no NAT NIC to forward ports through")
        with self._locked():
            rt = self.live_runtime("publish a port on")
            portmod.check_free({"networks": [{"publish": [value]}]})
            driver.add_port(rt["sockets"], nats[0], host_ip, host, guest, proto)
            entry = _port(nats[0], host_ip, host, guest, proto, "runtime")
            self._merge_runtime_unlocked({"ports": [*rt.get("ports", []), entry]})
        return entry

    def unpublish(self, value: str) -> dict[str, Any]:
        from vmkit.spec import parse_publish

        driver = self.require("publish", "unpublish ports")
        body, _, proto_part = value.partition("/")
        try:  # [IP:]HOST[/proto]: reuse the publish grammar with a dummy guest port
            host_ip, host, _guest, proto = parse_publish(
                f"{body}:1" + (f"/{proto_part}" if proto_part else "")
            )
        except ValueError as exc:
            raise InvalidInput(str(exc).replace(":1", "")) from None
        with self._locked():
            rt = self.live_runtime("unpublish a port on")
            ports = rt.get("ports", [])
            match = [
                p for p in ports if (p["host_ip"], p["host"], p["proto"]) == (host_ip, host, proto)
            ]
            if not match:
                raise InvalidInput(
                    f"VM {self.name!r} has no port {host_ip}:{host}/{proto} added at run time "
                    "(ports in the spec stay until the VM stops)"
                )
            driver.remove_port(rt["sockets"], match[0]["nic"], host_ip, host, proto)
            self._merge_runtime_unlocked({"ports": [p for p in ports if p not in match]})
        found: dict[str, Any] = match[0]
        return found

    def snapshot(self, name: str) -> Snapshot:
        """Save RAM + device state and clone the writable disks at the same instant."""
        from vmkit import snapshot_ops

        return snapshot_ops.create_snapshot(self, name)

    def migrate(self, to: str, timeout: float = 600.0) -> Machine:
        """Live-migrate to a new VM `to` (a second VMM on this host); this one stops."""
        from vmkit import snapshot_ops

        return snapshot_ops.migrate(self, to, timeout)

    def inspect(self) -> dict[str, Any]:
        record = self.record
        return {
            "name": self.name,
            "driver": record["driver"],
            "created_at": record.get("created_at"),
            "spec": record["spec"],
            "status": self.status().to_json(),
            "runtime": self.runtime(),
            **self._driver_extra(),
            "disks_made": record.get("disks_made", []),  # VM-owned disks: how each was made
            "paths": {
                "dir": str(self.dir),
                "serial_log": str(self.serial_log),
                "vmm_log": str(self.vmm_log),
            },
        }

    def _driver_extra(self) -> dict[str, Any]:
        """The running VMM's own view (Driver.inspect_extra), under "vmm"."""
        if not self.status().alive:
            return {}
        extra = self.driver.inspect_extra(self.runtime().get("sockets", {}))
        return {"vmm": extra} if extra else {}


def _port(nic: int, host_ip: str, host: int, guest: int, proto: str, source: str) -> dict[str, Any]:
    return {
        "nic": nic,
        "host_ip": host_ip,
        "host": host,
        "guest": guest,
        "proto": proto,
        "source": source,
    }


@dataclass
class GcReport:
    removed_dirs: list[str] = field(default_factory=list)
    killed_pids: list[int] = field(default_factory=list)
    removed_sockets: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    stopped_switches: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Host:
    """The VMs of one store (one user, one VMKIT_HOME)."""

    def __init__(self, home: Path | str | None = None):
        self.store = Store(Path(home) if home is not None else None)

    def create(self, spec: MachineSpec) -> Machine:
        """Record a new VM. Everything is checked first; on error nothing is left behind."""
        from vmkit.spec import missing_files

        problems = missing_files(spec)
        if problems:
            raise SpecError(problems)
        driver_name = resolve_driver_name(spec.driver, spec.arch)
        driver = get_driver(driver_name, spec.arch)
        if any(d.path is None for d in spec.disks) or spec.cloud_init is not None:
            from vmkit.storage.prepare import check_owned_files

            check_owned_files(spec, driver)
        driver.check(spec)
        if any(n.publish for n in spec.networks):
            from vmkit.net import portfwd

            portfwd.check(spec, driver)
        record: dict[str, Any] = {
            "spec": spec.to_json(),
            "driver": driver_name,
            "created_at": time.time(),
            "format": 1,
        }
        self._pin_macs(record["spec"])
        vm_dir = self.store.create(spec.name, record)
        if any(d.path is None for d in spec.disks) or spec.cloud_init is not None:
            from vmkit.storage.prepare import make_owned_files

            try:
                qcow2 = driver.capabilities.disk_qcow2
                record.update(make_owned_files(record["spec"], vm_dir, self.store.home, qcow2))
                self.store.save_machine(spec.name, record)
            except BaseException:
                self.store.remove(spec.name)
                raise
        return Machine(self, spec.name)

    def running_specs(self, driver: str) -> list[dict[str, Any]]:
        """Specs of this store's VMs on `driver` whose VMM process is alive (cheap: no
        control-socket round trips)."""
        out = []
        for name in self.store.names():
            with contextlib.suppress(NotFound, ValueError, KeyError):
                record = self.store.load_machine(name)
                proc = Machine._proc(self.store.load_runtime(name))
                if record.get("driver") == driver and proc is not None and proc.alive():
                    out.append(record["spec"])
        return out

    def _pin_macs(self, spec_json: dict[str, Any]) -> None:
        """Give each NIC without a MAC the stable one for (name, index), unless another VM in
        the store has it: then the next free one. Pinned in the spec, so it never changes."""
        from vmkit.net.mac import unique_mac

        used: set[str] = set()
        for name in self.store.names():
            with contextlib.suppress(NotFound, ValueError, KeyError):
                for net in self.store.load_machine(name)["spec"].get("networks", []):
                    if net.get("mac"):
                        used.add(str(net["mac"]).lower())
        for i, net in enumerate(spec_json.get("networks", [])):
            if net.get("mac"):
                mac = str(net["mac"]).lower()
                if mac in used:
                    raise InvalidInput(
                        f"networks[{i}].mac: {mac} is already used by another VM in this store"
                    )
            else:
                net["mac"] = unique_mac(str(spec_json["name"]), i, used)
            used.add(str(net["mac"]))

    def get(self, name: str) -> Machine:
        from vmkit.names import validate_name

        try:
            validate_name(name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return Machine(self, name)

    def machines(self) -> list[Machine]:
        out = []
        for name in self.store.names():
            with contextlib.suppress(NotFound):
                out.append(Machine(self, name))
        return out

    def run(self, spec: MachineSpec, timeout: float | None = None) -> Status:
        """create + start + wait_ready. Bad input found at start (e.g. a published port in
        use) removes the record again; a VM that launched and failed stays for `inspect`."""
        machine = self.create(spec)
        try:
            machine.start()
        except InvalidInput:
            with contextlib.suppress(VmkitError):
                machine.delete()
            raise
        return machine.wait_ready(timeout)

    def restore(
        self,
        snapshot: str,
        name: str | None = None,
        driver: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        memory_restore: str = "copy",
    ) -> Machine:
        """A new VM from a snapshot (own disk clones, fresh MACs); several copies allowed."""
        from vmkit import snapshot_ops

        return snapshot_ops.restore(self, snapshot, name, driver, wait, timeout, memory_restore)

    @property
    def snapshots(self) -> SnapshotStore:
        from vmkit.snapshots import SnapshotStore

        return SnapshotStore(self.store.home)

    def gc(self) -> GcReport:
        """Finish cut-off creates/deletes, record dead VMMs, remove stale sockets."""
        report = GcReport()
        import shutil

        with self.store.store_lock():
            for leftover in self.store.leftovers():
                rt_path = leftover / "runtime.json"
                with contextlib.suppress(OSError, ValueError):
                    import json

                    rt = json.loads(rt_path.read_text())
                    proc = Machine._proc(rt)
                    if proc is not None and proc.signal(signal.SIGKILL):
                        proc.wait_gone(10)
                        report.killed_pids.append(proc.pid)
                    Machine._remove_sockets(rt)
                shutil.rmtree(leftover, ignore_errors=True)
                report.removed_dirs.append(str(leftover))
            for leftover in self.snapshots.leftovers():
                shutil.rmtree(leftover, ignore_errors=True)
                report.removed_dirs.append(str(leftover))
        live_sockets: set[str] = set()
        for machine in self.machines():
            try:
                with machine._locked(5.0):
                    st = machine.status()
                    rt = machine.runtime()
                    if st.pid is None and "pid" in rt and not rt.get("gc_done"):
                        machine._remove_sockets(rt)
                        with contextlib.suppress(VmkitError, OSError):
                            # relays and TAPs vmkit made; switches.gc below does switches
                            machine._release_helpers(with_switches=False)
                        machine._merge_runtime_unlocked({"gc_done": True})
                        report.finalized.append(machine.name)
                    if st.pid is not None:
                        live_sockets.update(rt.get("sockets", {}).values())
            except (LockBusy, NotFound):
                continue
        from vmkit.net import switches

        report.stopped_switches = switches.gc(self.store)
        from vmkit.paths import runtime_dir

        for sock in runtime_dir().iterdir():
            if str(sock) in live_sockets or not sock.is_socket():
                continue
            if not _socket_answers(sock):
                sock.unlink(missing_ok=True)
                report.removed_sockets.append(str(sock))
        return report


def _socket_answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()
