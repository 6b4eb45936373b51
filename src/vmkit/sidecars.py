"""Helper processes and resources a VM holds besides its VMM, behind one interface.

A `Sidecar` starts (returning the `SidecarRecord` kept in runtime.json), and any record can
be stopped and health-checked from the record alone — by the launch that made it, by stop,
kill and rm, and by `vmkit gc` after a crash. Kinds: virtiofsd (a share's server), portfwd
(vmkit's port relay), tap (a TAP vmkit opened, deleted if vmkit made it), switch (a lease on
vmkit's L2 switch; the switch itself stops with its last lease), vmnet (a vmnet-helper
serving a macOS vmnet network to one NIC).
"""

from __future__ import annotations

import abc
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vmkit.errors import VMFailed, VmkitError
from vmkit.model import SidecarRecord
from vmkit.process import spawn_detached, wait_for_path
from vmkit.readiness import tail_lines

if TYPE_CHECKING:
    from vmkit.store import Store

TAIL = 20


class Sidecar(abc.ABC):
    kind: ClassVar[str]

    @abc.abstractmethod
    def start(self) -> SidecarRecord:
        """Start it; return once it serves (its socket exists, it listens)."""

    @classmethod
    def stop(cls, record: SidecarRecord) -> None:
        """Stop what `record` names: SIGTERM, then SIGKILL (a process sidecar)."""
        if (proc := record.process) is not None:
            proc.terminate()

    @classmethod
    def healthy(cls, record: SidecarRecord) -> bool:
        proc = record.process
        return proc is not None and proc.alive()


class Virtiofsd(Sidecar):
    """The virtiofsd serving share `share` on `socket` (read-only enforced by ro_exec)."""

    kind = "virtiofsd"

    def __init__(self, share: dict[str, Any], socket: Path, vm_dir: Path):
        self.share, self.socket, self.vm_dir = share, socket, vm_dir

    def start(self) -> SidecarRecord:
        from vmkit.shares import virtiofsd

        log = self.vm_dir / f"virtiofsd-{self.share['tag']}.log"
        return SidecarRecord.from_json(virtiofsd.start(self.share, self.socket, log, self.vm_dir))

    @classmethod
    def stop(cls, record: SidecarRecord) -> None:
        """The process, then its socket (virtiofsd leaves it behind)."""
        super().stop(record)
        if sock := record.extra.get("socket"):
            Path(sock).unlink(missing_ok=True)


class PortRelay(Sidecar):
    """vmkit's TCP relay for published ports the VMM does not forward (net/portfwd)."""

    kind = "portfwd"

    def __init__(self, home: Path, vm: str, vm_dir: Path, maps: list[tuple[str, int, int]]):
        self.home, self.vm, self.vm_dir, self.maps = home, vm, vm_dir, maps

    def start(self) -> SidecarRecord:
        ready = self.vm_dir / "portfwd.ready"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "vmkit.machine.relay", "--home", str(self.home)]
        argv += ["--vm", self.vm, "--ready", str(ready)]
        for host_ip, host, guest in self.maps:
            argv += ["--map", f"{host_ip}:{host}:{guest}"]
        proc = spawn_detached(argv, self.vm_dir / "portfwd.log", self.vm_dir)
        if not wait_for_path(proc, ready, 10.0):
            proc.signal(signal.SIGKILL)
            log = tail_lines(self.vm_dir / "portfwd.log", TAIL)
            raise VMFailed(f"VM {self.vm!r}: the port relay did not start:\n" + "\n".join(log))
        return SidecarRecord(self.kind, proc.pid, proc.create_time)


class Tap(Sidecar):
    """A TAP NIC, made if missing (in `netns`, on `bridge`); `open()` gives its fd."""

    kind = "tap"

    def __init__(self, name: str, netns: str | None, bridge: str | None):
        self.name, self.netns, self.bridge = name, netns, bridge
        self.fd = -1

    def start(self) -> SidecarRecord:
        from vmkit.net import tap

        self.fd, created = tap.open_tap(self.name, self.netns, self.bridge)
        return SidecarRecord(self.kind, name=self.name, netns=self.netns, created=created)

    @classmethod
    def stop(cls, record: SidecarRecord) -> None:
        if record.created and record.name:
            from vmkit.net import tap

            with contextlib.suppress(Exception):
                tap.delete_tap(record.name, record.netns)

    @classmethod
    def healthy(cls, record: SidecarRecord) -> bool:
        return True  # a TAP has no process; it lives as long as its interface


class SwitchLease(Sidecar):
    """A lease on vmkit's switch `name` for `ports` (the sockets the VMM binds); the switch
    starts with its first lease and stops with its last."""

    kind = "switch"

    def __init__(self, store: Store, name: str, vm: str, ports: list[str]):
        self.store, self.name, self.vm, self.ports = store, name, vm, ports

    def start(self) -> SidecarRecord:
        from vmkit.net import switches

        info = switches.ensure(self.store, self.name, self.vm, self.ports)
        return SidecarRecord(self.kind, name=self.name, extra={"socket": info["socket"]})

    def release(self) -> None:
        from vmkit.net import switches

        with contextlib.suppress(VmkitError):
            switches.release(self.store, self.name, self.vm)

    @classmethod
    def stop(cls, record: SidecarRecord) -> None:
        return None  # the lease is released with the VM (Machine knows its store and name)


class VmnetHelper(Sidecar):
    """vmnet-helper serving NIC `index`'s vmnet network on `socket` (net/vmnet)."""

    kind = "vmnet"

    def __init__(self, net: dict[str, Any], index: int, socket: Path, vm_dir: Path, vm: str):
        self.net, self.index, self.socket, self.vm_dir, self.vm = net, index, socket, vm_dir, vm

    def start(self) -> SidecarRecord:
        from vmkit.net import vmnet

        info = vmnet.start(self.net, self.index, self.socket, self.vm_dir, self.vm)
        return SidecarRecord.from_json(info)

    @classmethod
    def stop(cls, record: SidecarRecord) -> None:
        from vmkit.net import vmnet

        vmnet.stop(record.to_json())


KINDS: dict[str, type[Sidecar]] = {
    cls.kind: cls for cls in (Virtiofsd, PortRelay, Tap, SwitchLease, VmnetHelper)
}


def stop(record: SidecarRecord) -> None:
    """Stop any sidecar from its record (unknown kinds from newer vmkits are left alone)."""
    cls = KINDS.get(record.kind)
    if cls is not None:
        cls.stop(record)


def stop_all(records: list[SidecarRecord]) -> None:
    for record in reversed(records):
        with contextlib.suppress(Exception):
            stop(record)
