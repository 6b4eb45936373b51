"""The Driver protocol and Capabilities: what a VMM driver must do and what it declares."""

from __future__ import annotations

import abc
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vmkit.errors import NotSupported, VmkitError

if TYPE_CHECKING:
    from vmkit.spec import Disk, MachineSpec, Network


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do. `docs/capabilities.md` is generated from these declarations."""

    boot_linux: bool = False
    boot_efi: bool = False
    boot_macos: bool = False
    arch_emulation: bool = False
    rosetta: bool = False
    disk_raw: bool = False
    disk_qcow2: bool = False
    disk_clone: bool = False
    cloud_init: bool = False
    net_none: bool = False
    net_user: bool = False
    net_switch: bool = False
    publish: bool = False
    shares: bool = False
    net_tap: bool = False
    rng: bool = False
    balloon: bool = False
    graceful_stop: bool = False
    kill: bool = False
    console: bool = False
    readiness: bool = False
    readopt: bool = False
    crash_detection: bool = False
    pause: bool = False
    snapshot: bool = False
    restore_readiness: bool = False
    hotplug_disk: bool = False
    hotplug_net: bool = False
    hotplug_share: bool = False
    migrate: bool = False
    reboot: bool = False
    resize: bool = False
    counters: bool = False

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


CAPABILITY_TEXT = {
    "boot_linux": "Direct Linux boot (kernel + initrd + cmdline)",
    "boot_efi": "EFI firmware boot from a disk image",
    "boot_macos": "macOS guests (Apple silicon), at most 2 running per Mac, checked first",
    "disk_raw": "Raw disk images (read-write and read-only)",
    "disk_qcow2": "qcow2 disk images",
    "disk_clone": "VM-owned disks: new (`size:`) or CoW clones (`clone:`), made at create",
    "cloud_init": "cloud-init NoCloud seed ISO built from the spec (pycdlib), attached read-only",
    "net_none": "No network",
    "net_user": "NAT networking through the hypervisor (QEMU user)",
    "net_switch": "VMs on vmkit's userspace L2 switch (`--net switch:NAME`), no root needed",
    "net_tap": "TAP NICs (Linux), optionally in a named netns or on a bridge (`--net tap:IF@NS`)",
    "shares": "Shared host folders over virtio-fs, read-only enforced (`--share`)",
    "publish": "Published ports: host 127.0.0.1:PORT forwarded to the guest (`--publish`)",
    "rng": "virtio-rng entropy device",
    "balloon": "virtio-balloon device",
    "graceful_stop": "Graceful stop: ACPI power button, then SIGTERM, then SIGKILL",
    "kill": "Immediate kill (SIGKILL)",
    "console": "Interactive serial console attach",
    "readiness": "Readiness line on the serial console, with timeout and log tails",
    "readopt": "A second vmkit process sees and controls a running VM",
    "crash_detection": "A VMM that died behind vmkit's back is shown failed, with the reason",
    "pause": "Pause / resume",
    "snapshot": "Snapshot (memory + device state + disk clones) and restore into new VMs",
    "restore_readiness": "A restored VM announces readiness again",
    "rosetta": "Rosetta shared with Linux guests for x86_64 binaries (Apple silicon, `rosetta:`)",
    "arch_emulation": "Guests of another CPU architecture, emulated (`arch:`: arm64 on x86_64)",
    "hotplug_disk": "Disk hotplug / unplug on a running VM",
    "hotplug_net": "NIC hotplug / unplug on a running VM",
    "hotplug_share": "virtio-fs share hotplug / unplug on a running VM",
    "migrate": "Local live migration between two VMM processes",
    "reboot": "Reboot a running guest",
    "resize": "Resize vCPUs and memory of a running VM (up to max_cpus / max_memory)",
    "counters": "Per-device I/O counters of a running VM",
}


@dataclass
class LaunchContext:
    """Where the driver must put things; decided by the Machine layer."""

    vm_dir: Path
    serial_log: Path
    events_log: Path
    sockets: dict[str, Path]
    accelerator: str  # resolved: kvm | hvf | tcg
    switch_sockets: dict[str, Path] = field(default_factory=dict)  # switch name -> its socket


@dataclass(frozen=True)
class ReadinessProbe:
    ready: bool
    ip: str | None
    waiting_for: str  # what ready means for this guest, for the timeout message


@dataclass
class LaunchPlan:
    argv: list[str]
    sockets: dict[str, Path]
    accelerator: str
    api_requests: list[dict[str, Any]] = field(default_factory=list)  # for API-driven VMMs

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "sockets": {k: str(v) for k, v in self.sockets.items()},
            "accelerator": self.accelerator,
            "api_requests": self.api_requests,
        }


@dataclass(frozen=True)
class ExitCause:
    """Why a VMM exited, as far as its own logs tell."""

    clean: bool  # the guest powered off (or the VMM was asked to quit)
    reason: str


class Driver(abc.ABC):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    binary_names: tuple[str, ...]
    install_hint: ClassVar[str]
    # Control sockets the VMM needs, role -> short file suffix in the runtime dir.
    socket_roles: ClassVar[dict[str, str]] = {}
    # A driver checked only against test doubles and the VMM's documented interface (its
    # hypervisor cannot run where the tests run) names the platform it has not run on yet;
    # docs/capabilities.md then shows its tested capabilities as "contract-tested, not yet
    # run on <that>", never as supported.
    not_yet_run_on: ClassVar[str | None] = None
    # Files in the VM's folder that are machine state besides its disks (QEMU: the UEFI
    # variable store): snapshots keep a copy, restored and migrated copies start from it.
    vm_state_files: ClassVar[tuple[str, ...]] = ()

    # An environment variable naming the VMM binary explicitly (e.g. VMKIT_CLOUD_HYPERVISOR).
    binary_env: ClassVar[str | None] = None

    def find_binary(self) -> str:
        if self.binary_env and (explicit := os.environ.get(self.binary_env)):
            if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
                raise VmkitError(f"{self.binary_env}={explicit} is not an executable file")
            return explicit
        for candidate in self.binary_names:
            found = shutil.which(candidate)
            if found:
                return found
        raise VmkitError(
            f"{self.binary_names[0]} not found on PATH: {self.install_hint}",
        )

    def binary_or_name(self) -> str:
        """The binary's path, or just its name (for --dry-run on a host without it)."""
        try:
            return self.find_binary()
        except VmkitError:
            return self.binary_names[0]

    @abc.abstractmethod
    def check(self, spec: MachineSpec) -> None:
        """Raise NotSupported/InvalidInput for what this driver cannot do with `spec`."""

    @abc.abstractmethod
    def plan(self, spec: MachineSpec, ctx: LaunchContext) -> LaunchPlan:
        """The exact argv (and API requests) that launch `spec`; pure, runs nothing."""

    @abc.abstractmethod
    def control_state(self, sockets: dict[str, str], timeout: float = 2.0) -> str | None:
        """The VMM's own view of the guest (running, paused, ...); None if not answering."""

    @abc.abstractmethod
    def request_powerdown(self, sockets: dict[str, str]) -> None:
        """Press the ACPI power button (or the VMM's equivalent)."""

    def force_shutdown(self, sockets: dict[str, str]) -> str | None:
        """A VMM-level hard stop, tried after the guest ignored the power button and before
        SIGTERM (Cloud Hypervisor `vm.shutdown`, vfkit `HardStop`).

        Returns the name of the step (reported by `vmkit stop`), or None when the driver has
        no such step (QEMU: SIGTERM already makes it shut down cleanly).
        """
        return None

    @abc.abstractmethod
    def exit_cause(self, ctx: LaunchContext) -> ExitCause | None:
        """Read the VMM's logs after it exited; None when they say nothing."""

    def host_limits(self, spec: MachineSpec, running: list[dict[str, Any]]) -> None:
        """Refuse a launch the host cannot take, given the specs of this driver's running
        VMs (e.g. vfkit: at most 2 macOS guests per Mac). Default: no limit."""
        return None

    def after_launch(self, sockets: dict[str, str], plan: LaunchPlan) -> None:
        """Once the VMM's control socket answers: send `plan.api_requests` (API-driven VMMs
        such as Cloud Hypervisor create and boot the VM this way). Default: nothing."""
        return None

    def start_incoming(self, sockets: dict[str, str], uri: str) -> None:
        """Tell a migration target VMM to listen on `uri` (QEMU does it from its argv)."""
        return None

    def prepare(self, spec: MachineSpec, ctx: LaunchContext) -> None:
        """Make the files `plan` refers to (e.g. a decompressed kernel in the VM dir); runs
        right before launch, never on --dry-run."""
        return None

    def forwards_ports(self, net: dict[str, Any]) -> bool:
        """Whether the VMM itself forwards this NIC's published ports (QEMU's user network);
        else vmkit's relay (net/portfwd) does, to the guest's address."""
        return False

    def check_rosetta(self, spec: MachineSpec) -> None:
        """`rosetta: true` only where the driver can share it (vfkit on Apple silicon)."""
        if spec.rosetta and not self.capabilities.rosetta:
            raise NotSupported(
                f"rosetta: the {self.name} driver cannot share Rosetta; it exists only with "
                "driver: vfkit on an Apple silicon Mac (remove rosetta, or use arch: x86_64 "
                "to emulate)"
            )

    def probe_readiness(
        self, spec: dict[str, Any], sockets: dict[str, str], vm_dir: Path
    ) -> ReadinessProbe | None:
        """For guests that cannot print vmkit's readiness line (macOS guests): whether the
        guest is ready by other signs, polled while waiting. None: the guest prints the
        line on its serial console (the default)."""
        return None

    def guest_ip(self, spec: dict[str, Any]) -> str | None:
        """The guest's IP when the VMM or host knows it (vfkit: the macOS DHCP leases);
        used only when the readiness line gave none. `spec` is the stored spec JSON (no
        validation: this runs on every `vmkit ls`)."""
        return None

    def inspect_extra(self, sockets: dict[str, str]) -> dict[str, Any]:
        """Extra facts for `vmkit inspect` from the running VMM (vfkit: GET /vm/inspect)."""
        return {}

    # ---- advanced lifecycle ----------------------------------------------------------
    # The Machine layer checks `capabilities` before calling any of these, so a driver
    # that cannot do a verb says so before the VM is touched. The defaults exist only so a
    # driver without the capability need not implement the method.
    def unsupported(self, verb: str) -> NotSupported:
        return NotSupported(f"the {self.name} driver cannot {verb}")

    def pause(self, sockets: dict[str, str]) -> None:
        """Freeze the guest's vCPUs; the VMM keeps running."""
        raise self.unsupported("pause")

    def resume(self, sockets: dict[str, str]) -> None:
        raise self.unsupported("resume")

    def reboot(self, sockets: dict[str, str]) -> None:
        raise self.unsupported("reboot")

    def save_state(self, sockets: dict[str, str], state_dir: Path) -> dict[str, Any]:
        """Write the paused guest's RAM + device state into `state_dir` (which exists).

        Returns driver-specific metadata stored in the snapshot record (file names, sizes).
        Disks are not the driver's business: the Machine layer clones them.
        """
        raise self.unsupported("snapshot")

    def plan_restore(
        self, spec: MachineSpec, ctx: LaunchContext, state_dir: Path, meta: dict[str, Any]
    ) -> LaunchPlan:
        """The argv of a VMM that will take in the state saved in `state_dir`."""
        raise self.unsupported("restore")

    def complete_restore(
        self, sockets: dict[str, str], state_dir: Path, meta: dict[str, Any], timeout: float
    ) -> None:
        """After `plan_restore`'s VMM answers: load the state and let the guest run."""
        raise self.unsupported("restore")

    def announce_readiness(self, sockets: dict[str, str], macs: list[str]) -> None:
        """Tell a restored guest it was restored (with its new MACs) so it prints its
        readiness line again; no-op for drivers without a guest channel."""
        return None

    def attach_disk(self, sockets: dict[str, str], disk: Disk, device_id: str) -> None:
        raise self.unsupported("hotplug disks")

    def detach_disk(self, sockets: dict[str, str], device_id: str) -> None:
        raise self.unsupported("unplug disks")

    def attach_net(
        self,
        sockets: dict[str, str],
        net: Network,
        device_id: str,
        mac: str,
        switch: tuple[Path, Path] | None = None,
    ) -> None:
        """Hot-plug `net`. `switch` (mode switch): (the switch's socket, the port socket the
        VMM binds), set up by the Machine layer."""
        raise self.unsupported("hotplug NICs")

    def detach_net(self, sockets: dict[str, str], device_id: str) -> None:
        raise self.unsupported("unplug NICs")

    def attach_share(
        self, sockets: dict[str, str], tag: str, socket_path: str, device_id: str
    ) -> None:
        """Plug a virtio-fs device served by the virtiofsd listening on `socket_path`."""
        raise self.unsupported("hot-plug shares")

    def detach_share(self, sockets: dict[str, str], device_id: str) -> None:
        raise self.unsupported("unplug shares")

    def resize(self, sockets: dict[str, str], cpus: int | None, memory: int | None) -> None:
        raise self.unsupported("resize a running VM")

    def counters(self, sockets: dict[str, str]) -> dict[str, Any]:
        raise self.unsupported("report device counters")

    def add_port(
        self, sockets: dict[str, str], nic: int, host_ip: str, host: int, guest: int, proto: str
    ) -> None:
        """Forward host_ip:host to the guest's port on NAT NIC `nic` while running."""
        raise self.unsupported("publish ports on a running VM")

    def remove_port(
        self, sockets: dict[str, str], nic: int, host_ip: str, host: int, proto: str
    ) -> None:
        raise self.unsupported("unpublish ports on a running VM")

    def plan_incoming(self, spec: MachineSpec, ctx: LaunchContext, uri: str) -> LaunchPlan:
        """The argv of a VMM that waits for a live migration on `uri` (unix:PATH)."""
        raise self.unsupported("receive a migration")

    def send_migration(self, sockets: dict[str, str], uri: str, timeout: float) -> None:
        """Live-migrate the running guest to the VMM listening on `uri`; blocks until the
        target has the guest, and leaves the source VMM exiting (QEMU: `quit`)."""
        raise self.unsupported("migrate")
