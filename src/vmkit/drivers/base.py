"""The Driver protocol and Capabilities: what a VMM driver must do and what it declares."""

from __future__ import annotations

import abc
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vmkit.errors import VmkitError

if TYPE_CHECKING:
    from vmkit.spec import MachineSpec


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do. `docs/capabilities.md` is generated from these declarations."""

    boot_linux: bool = False
    boot_efi: bool = False
    disk_raw: bool = False
    disk_qcow2: bool = False
    net_none: bool = False
    net_user: bool = False
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
    hotplug: bool = False
    migrate: bool = False

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


CAPABILITY_TEXT = {
    "boot_linux": "Direct Linux boot (kernel + initrd + cmdline)",
    "boot_efi": "EFI firmware boot from a disk image",
    "disk_raw": "Raw disk images (read-write and read-only)",
    "disk_qcow2": "qcow2 disk images",
    "net_none": "No network",
    "net_user": "NAT networking through the hypervisor (QEMU user)",
    "rng": "virtio-rng entropy device",
    "balloon": "virtio-balloon device",
    "graceful_stop": "Graceful stop: ACPI power button, then SIGTERM, then SIGKILL",
    "kill": "Immediate kill (SIGKILL)",
    "console": "Interactive serial console attach",
    "readiness": "Readiness line on the serial console, with timeout and log tails",
    "readopt": "A second vmkit process sees and controls a running VM",
    "crash_detection": "A VMM that died behind vmkit's back is shown failed, with the reason",
    "pause": "Pause / resume",
    "snapshot": "Snapshot / restore",
    "hotplug": "Disk and NIC hotplug",
    "migrate": "Local live migration",
}


@dataclass
class LaunchContext:
    """Where the driver must put things; decided by the Machine layer."""

    vm_dir: Path
    serial_log: Path
    events_log: Path
    sockets: dict[str, Path]
    accelerator: str  # resolved: kvm | hvf | tcg


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

    def find_binary(self) -> str:
        for candidate in self.binary_names:
            found = shutil.which(candidate)
            if found:
                return found
        raise VmkitError(
            f"{self.binary_names[0]} not found on PATH: {self.install_hint}",
        )

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

    @abc.abstractmethod
    def exit_cause(self, ctx: LaunchContext) -> ExitCause | None:
        """Read the VMM's logs after it exited; None when they say nothing."""
