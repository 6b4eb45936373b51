"""Starting a VM, and launching a VMM as named steps, each with its clean-up (as
firecracker-go-sdk's handler lists): shared by start, restore and incoming migration.

The launch record is written before anything is spawned: its `tag` (the VMM's own control
socket path, which is in its argv) makes the VMM findable from the VM dir alone, so a vmkit
killed between spawn and record never leaves a VMM that `ls`, `start`, `rm` and `gc` cannot
see. On any failure the clean-ups run in reverse and nothing is left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vmkit import faults, sidecars
from vmkit.errors import SpecError, VmkitError, VMStateError
from vmkit.model import RuntimeRecord, SidecarRecord
from vmkit.process import ProcessRef, reap_child, spawn_detached

if TYPE_CHECKING:
    from vmkit.drivers.base import LaunchPlan
    from vmkit.machine.facade import Machine

T = TypeVar("T")


class Steps:
    """Run named steps; `undo` registers a step's clean-up, run in reverse on failure."""

    def __init__(self) -> None:
        self.undos: list[tuple[str, Callable[[], None]]] = []
        self.current = ""

    def run(self, name: str, fn: Callable[[], T], undo: Callable[[T], None] | None = None) -> T:
        self.current = name
        faults.point(f"launch:{name.split()[0]}")
        result = fn()
        if undo is not None:
            self.undos.append((name, lambda: undo(result)))
        return result

    def rollback(self) -> None:
        for _name, undo in reversed(self.undos):
            with contextlib.suppress(Exception):
                undo()
        self.undos.clear()


@contextlib.contextmanager
def closing_fds(fds: list[int]) -> Iterator[list[int]]:
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)  # the VMM has its own copies now


def start(machine: Machine) -> LaunchPlan:
    """Launch the VMM detached and return once its control socket answers."""
    with machine.locked():
        _check_not_running(machine)
        from vmkit.spec import missing_files

        spec = machine.spec
        problems = missing_files(spec)
        if problems:
            raise SpecError(problems)
        machine.driver.find_binary()
        machine.driver.host_limits(spec, lambda: machine.host.running_specs(machine.driver_name))
        plan = machine.plan()
        machine.driver.prepare(spec, machine.context(plan.accelerator))
        proc = launch(machine, plan)
    faults.point("start:launched")
    try:
        ctl = machine.wait_control(proc, clean_exit_ok=not plan.api_requests)
        if ctl is not None and plan.api_requests:
            try:
                ctl.after_launch(plan)
            except VmkitError as exc:
                _abandon_launch(machine, proc, f"the VMM could not create the VM: {exc}")
                raise
    except VmkitError:
        if proc.wait_gone(0):
            machine.release_sidecars()
        raise
    return plan


def _abandon_launch(machine: Machine, proc: ProcessRef, reason: str) -> None:
    """An API-driven VMM is up without a VM: kill it, and keep why as the VM's failure."""
    proc.signal(signal.SIGKILL)
    proc.wait_gone(10)
    reap_child(proc.pid)
    machine.update_runtime(exit={"clean": False, "status": None, "reason": reason})


def _check_not_running(machine: Machine) -> None:
    rt = machine.runtime()
    st = machine.status()
    if st.alive:
        raise VMStateError(
            f"VM {machine.name!r} is already {st.state} (pid {st.pid}); "
            f"stop it first with `vmkit stop {machine.name}`"
        )
    if rt.pid is None and (proc := machine.process(rt)) is not None and proc.alive():
        raise VMStateError(  # a launch cut off before its pid was recorded
            f"VM {machine.name!r} has a VMM (pid {proc.pid}) from a start that was cut off; "
            f"`vmkit kill {machine.name}` ends it"
        )


def launch_tag(plan: LaunchPlan) -> str:
    """What marks this VMM's argv: its first control socket's path (unique per VM)."""
    return str(next(iter(plan.sockets.values())))


def launch(machine: Machine, plan: LaunchPlan, extra: dict[str, Any] | None = None) -> ProcessRef:
    """Spawn `plan.argv` detached, its sidecars first, and record it (caller holds the
    VM's lock). Everything started is stopped again if a step fails."""
    steps = Steps()
    spec = machine.spec_json
    helpers: list[SidecarRecord] = []

    intent = RuntimeRecord(
        driver=machine.driver_name,
        accelerator=plan.accelerator,
        argv=plan.argv,
        sockets={k: str(v) for k, v in plan.all_sockets().items()},
        launching={"tag": launch_tag(plan), "at": time.time()},
    )

    def keep(rec: SidecarRecord) -> SidecarRecord:
        """Record each sidecar as soon as it runs: a launch cut off here leaves it for gc."""
        helpers.append(rec)
        intent.helpers = list(helpers)
        machine.save_runtime(intent)
        return rec

    try:
        steps.run("stale sockets", lambda: _unlink_sockets(plan))
        steps.run("fifos", lambda: _make_fifos(plan))
        steps.run("vmm log", lambda: _log_header(machine))
        publishes = any(net.get("publish") for net in spec.get("networks", []))
        if publishes:  # (the port modules load sockets and threads: only when used)
            steps.run("ports free", lambda: _check_ports(spec))
        steps.run("launch record", lambda: machine.save_runtime(intent))
        steps.undos.append(("launch record", lambda: machine.save_runtime(RuntimeRecord())))
        if machine.serial_log.parent == machine.dir:
            steps.run("serial log", lambda: _private_log(machine.serial_log))
        for lease in _switch_leases(machine, plan):
            steps.run(f"switch {lease.name}", lambda lease=lease: keep(lease.start()))  # type: ignore[misc]
            steps.undos.append((f"switch {lease.name}", lease.release))
        for share in plan.shares:
            vfs = sidecars.Virtiofsd(spec["shares"][share.index], share.socket, machine.dir)
            steps.run(f"virtiofsd {share.index}", lambda vfs=vfs: keep(vfs.start()), sidecars.stop)  # type: ignore[misc]
        if publishes and (maps := machine.relayed_ports()):
            relay = sidecars.PortRelay(machine.store.home, machine.name, machine.dir, maps)
            steps.run("port relay", lambda: keep(relay.start()), sidecars.stop)
        for i, net in enumerate(spec.get("networks", [])):
            if f"vmnet{i}" in plan.sockets:  # the NIC joins this helper's socket (net/vmnet)
                helper = sidecars.VmnetHelper(
                    net, i, plan.sockets[f"vmnet{i}"], machine.dir, machine.name
                )
                steps.run(f"vmnet {i}", lambda h=helper: keep(h.start()), sidecars.stop)  # type: ignore[misc]
        argv, fds = list(plan.argv), list[int]()
        with closing_fds(fds):
            nets = spec.get("networks", [])
            for i, net in enumerate(nets):
                if net.get("mode") != "tap":
                    continue
                tap = sidecars.Tap(net["tap"], net.get("netns"), net.get("bridge"))
                steps.run(f"tap {tap.name}", lambda tap=tap: keep(tap.start()), sidecars.stop)  # type: ignore[misc]
                slot = next((t for t in plan.tap_fds if t.index == i), None)
                if slot is None:
                    # The VMM takes this TAP later (Cloud Hypervisor: vm.add-net with an fd):
                    # an fd inherited now would hold the single-queue TAP and make that fail.
                    os.close(tap.fd)
                    continue
                fds.append(tap.fd)
                argv = [a.replace(slot.placeholder, str(tap.fd)) for a in argv]
            proc = steps.run(
                "spawn",
                lambda: spawn_detached(argv, machine.vmm_log, machine.dir, tuple(fds)),
                _kill,
            )
        record = RuntimeRecord(
            pid=proc.pid,
            create_time=proc.create_time,
            driver=machine.driver_name,
            accelerator=plan.accelerator,
            argv=argv,
            sockets={k: str(v) for k, v in plan.all_sockets().items()},
            started_at=time.time(),
            helpers=helpers,
        )
        if extra:  # where it came from (restored_from, migrated_from) and inherited facts
            record = RuntimeRecord.from_json({**record.to_json(), **extra})
        steps.run("runtime record", lambda: machine.save_runtime(record))
    except BaseException:
        steps.rollback()
        raise
    return proc


def _kill(proc: ProcessRef) -> None:
    proc.signal(signal.SIGKILL)
    proc.wait_gone(10)


def _unlink_sockets(plan: LaunchPlan) -> None:
    for sock in plan.all_sockets().values():
        sock.unlink(missing_ok=True)  # stale: the VMM that owned it is gone


def _make_fifos(plan: LaunchPlan) -> None:
    for path in plan.fifos.values():
        os.mkfifo(path, 0o600)  # a stale one was unlinked with the sockets


def _private_log(path: Path) -> None:
    """The serial log exists, 0600, before the VMM appends the guest's output to it."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    path.chmod(0o600)  # an older vmkit's (or the VMM's) 0644 file


def _log_header(machine: Machine) -> None:
    machine.context("tcg").events_log.unlink(missing_ok=True)
    _private_log(machine.vmm_log)  # 0600: it holds the VMM's errors and paths
    with machine.vmm_log.open("ab") as log:
        log.write(f"--- vmkit: starting {machine.name} at {time.ctime()} ---\n".encode())


def _check_ports(spec: dict[str, Any]) -> None:
    from vmkit.net import ports

    ports.check_free(spec)


def _switch_leases(machine: Machine, plan: LaunchPlan) -> list[sidecars.SwitchLease]:
    from vmkit.net import switches

    return [
        sidecars.SwitchLease(
            machine.store,
            name,
            machine.name,
            [str(p.port) for p in plan.switch_ports if p.switch == name],
        )
        for name in switches.names_of(machine.spec_json)
    ]
