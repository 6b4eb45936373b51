"""The optional abilities of a running VMM, as small protocols a driver's Control implements.

A driver can do a verb exactly when its Control class has the protocol's methods (and, for
restore and incoming migration, the driver can plan the receiving VMM). `derived_capabilities`
turns that into the `Capabilities` flags `docs/capabilities.md` is generated from, and
`Machine` asks `ability(control, Protocol)` before touching a VM: one answer to "can it?".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from vmkit.drivers.base import Control, Driver, LaunchContext, LaunchPlan, RestorePlan
    from vmkit.spec import Disk, MachineSpec, Network


@runtime_checkable
class Pausable(Protocol):
    def pause(self) -> None:
        """Freeze the guest's vCPUs; the VMM keeps running. Idempotent."""

    def resume(self) -> None:
        """Continue a paused guest. Idempotent."""


@runtime_checkable
class Rebootable(Protocol):
    def reboot(self) -> None: ...


@runtime_checkable
class Snapshottable(Protocol):
    def save_state(self, state_dir: Path) -> dict[str, Any]:
        """Write the paused guest's RAM + device state into `state_dir` (which exists).

        Returns driver-specific metadata stored in the snapshot record (file names, sizes).
        Disks are not the driver's business: the Machine layer clones them.
        """

    def complete_restore(self, plan: RestorePlan, timeout: float) -> None:
        """After the VMM of `Driver.plan_restore` answers: load the state, let it run."""


@runtime_checkable
class RestorePlanner(Protocol):
    """Driver side of Snapshottable: the VMM that will take in a saved state."""

    def plan_restore(
        self, spec: MachineSpec, ctx: LaunchContext, state_dir: Path, meta: dict[str, Any]
    ) -> RestorePlan: ...


@runtime_checkable
class RamSharer(Protocol):
    """Driver side: turn a fresh snapshot's state into RAM its restored copies map
    copy-on-write (one set of page-cache pages for all of them)."""

    def share_ram(
        self,
        spec: MachineSpec,
        staging: Path,
        state: dict[str, Any],
        disks: list[dict[str, Any]],
        accelerator: str,
    ) -> dict[str, Any]:
        """The new state metadata; raises (leaving `staging` as it was) if it cannot."""
        ...


@runtime_checkable
class GuestChannel(Protocol):
    def announce_readiness(self, networks: list[Network], own_agent: bool = False) -> str | None:
        """Tell a restored guest it was restored, with its NICs (their new MACs; the driver
        decides from their modes whether the guest may keep its address, if `own_agent`:
        the guest runs vmkit's tiny-guest agent), so it prints its
        readiness line again. Returns the address the guest answered with ("-": none),
        which is its readiness, or None when it did not answer (the readiness line is then
        awaited on the serial log)."""


@runtime_checkable
class DiskHotplug(Protocol):
    def attach_disk(self, disk: Disk, device_id: str) -> None: ...

    def detach_disk(self, device_id: str) -> None: ...


@runtime_checkable
class NicHotplug(Protocol):
    def attach_net(
        self, net: Network, device_id: str, mac: str, switch: tuple[Path, Path] | None = None
    ) -> None:
        """Hot-plug `net`. `switch` (mode switch): (the switch's socket, the port socket the
        VMM binds), set up by the Machine layer."""

    def detach_net(self, device_id: str) -> None: ...


@runtime_checkable
class ShareHotplug(Protocol):
    def attach_share(self, tag: str, socket_path: str, device_id: str) -> None:
        """Plug a virtio-fs device served by the virtiofsd listening on `socket_path`."""

    def detach_share(self, device_id: str) -> None: ...


@runtime_checkable
class Migratable(Protocol):
    def start_incoming(self, uri: str) -> None:
        """Tell a migration target VMM to listen on `uri` (QEMU does it from its argv)."""

    def send_migration(self, uri: str, timeout: float) -> None:
        """Live-migrate the running guest to the VMM listening on `uri`; blocks until the
        target has the guest, and leaves the source VMM exiting."""


@runtime_checkable
class IncomingPlanner(Protocol):
    """Driver side of Migratable: a VMM that waits for a live migration on `uri`."""

    def plan_incoming(self, spec: MachineSpec, ctx: LaunchContext, uri: str) -> LaunchPlan: ...


@runtime_checkable
class Resizable(Protocol):
    def resize(self, cpus: int | None, memory: int | None) -> None: ...


@runtime_checkable
class CounterSource(Protocol):
    def counters(self) -> dict[str, Any]: ...


@runtime_checkable
class PortForwarder(Protocol):
    """Forward host ports to a NAT NIC of the running VM (QEMU's hostfwd)."""

    def add_port(self, nic: int, host_ip: str, host: int, guest: int, proto: str) -> None: ...

    def remove_port(self, nic: int, host_ip: str, host: int, proto: str) -> None: ...


A = TypeVar("A")


def has(cls: type[Any], protocol: type[Any]) -> bool:
    """Whether `cls` implements every method of `protocol` (a class-level check)."""
    return issubclass(cls, protocol)


def derived_capabilities(driver: Driver) -> dict[str, bool]:
    """The verb capabilities of `driver`, from the protocols its classes implement."""
    ctl = driver.control_class
    drv = type(driver)
    return {
        "pause": has(ctl, Pausable),
        "reboot": has(ctl, Rebootable),
        "snapshot": has(ctl, Snapshottable) and has(drv, RestorePlanner),
        "restore_readiness": has(ctl, GuestChannel),
        "hotplug_disk": has(ctl, DiskHotplug),
        "hotplug_net": has(ctl, NicHotplug),
        "hotplug_share": has(ctl, ShareHotplug),
        "migrate": has(ctl, Migratable) and has(drv, IncomingPlanner),
        "resize": has(ctl, Resizable),
        "counters": has(ctl, CounterSource),
    }


def ability(control: Control, protocol: type[A]) -> A | None:
    """`control` as `protocol` if it implements it, else None."""
    return control if isinstance(control, protocol) else None
