"""QEMU driver: spec -> `qemu-system-*` argv; control over QMP.

q35 (x86_64) or virt (aarch64), `-nodefaults`, the serial console on a Unix socket with a
logfile (so `vmkit console` can attach while serial.log keeps everything), QMP on a Unix
socket, seccomp sandbox on, and a trace of shutdown requests so vmkit can tell a guest
poweroff from a crash after the fact (it is not QEMU's parent by then).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from vmkit.drivers.base import Capabilities, Driver, ExitCause, LaunchContext, LaunchPlan
from vmkit.drivers.qmp import QMP, QMPError
from vmkit.errors import InvalidInput, NotSupported
from vmkit.hostinfo import is_linux, machine_arch

if TYPE_CHECKING:
    from vmkit.spec import MachineSpec

# QEMU's ShutdownCause enum (qapi/run-state.json), as the trace event prints it.
SHUTDOWN_CAUSES = {
    0: ("none", False),
    1: ("host error", False),
    2: ("QMP quit", True),
    3: ("QMP system_reset", True),
    4: ("host signal (SIGTERM/SIGINT/SIGHUP)", True),
    5: ("host UI", True),
    6: ("guest shutdown", True),
    7: ("guest reset", True),
    8: ("guest panic", False),
    9: ("subsystem reset", True),
    10: ("snapshot load", True),
}
_TRACE_RE = re.compile(r"qemu_system_shutdown_request reason=(\d+)")

RUN_STATES = {
    "running": "running",
    "paused": "paused",
    "suspended": "paused",
    "prelaunch": "starting",
    "inmigrate": "starting",
    "postmigrate": "paused",
    "finish-migrate": "paused",
    "save-vm": "paused",
    "restore-vm": "starting",
    "shutdown": "stopping",
    "guest-panicked": "failed",
    "internal-error": "failed",
    "io-error": "failed",
    "watchdog": "failed",
    "colo": "running",
}


def qemu_escape(value: str | Path) -> str:
    """QEMU's option syntax doubles commas inside a value."""
    return str(value).replace(",", ",,")


def stable_mac(name: str, index: int) -> str:
    """A locally administered MAC (52:54:00 prefix) derived from the VM name and NIC index."""
    digest = hashlib.sha256(f"{name}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


class QemuDriver(Driver):
    name = "qemu"
    capabilities = Capabilities(
        boot_linux=True,
        disk_raw=True,
        disk_qcow2=True,
        net_none=True,
        net_user=True,
        rng=True,
        balloon=True,
        graceful_stop=True,
        kill=True,
        console=True,
        readiness=True,
        readopt=True,
        crash_detection=True,
    )
    socket_roles: ClassVar[dict[str, str]] = {"qmp": "qmp", "console": "con"}
    install_hint: ClassVar[str] = (
        "install QEMU (Debian/Ubuntu: `apt-get install qemu-system-x86` or "
        "`qemu-system-arm`; macOS: `brew install qemu`)"
    )

    def __init__(self, arch: str | None = None):
        self.arch = arch or machine_arch()
        self.binary_names = (f"qemu-system-{self.arch}",)

    def check(self, spec: MachineSpec) -> None:
        from vmkit.spec import EfiBoot

        if isinstance(spec.boot, EfiBoot):
            raise NotSupported(
                "boot.kind 'efi' is not implemented in vmkit's QEMU driver yet; "
                "use a linux boot (kernel + initrd)"
            )
        if self.arch not in ("x86_64", "aarch64"):
            raise NotSupported(
                f"vmkit's QEMU driver supports x86_64 and aarch64 hosts, not {self.arch}"
            )
        if spec.accelerator == "hvf" and is_linux():
            raise InvalidInput("accelerator: 'hvf' exists only on macOS; use kvm or tcg on Linux")

    def console_device(self) -> str:
        return "ttyAMA0" if self.arch == "aarch64" else "ttyS0"

    def plan(self, spec: MachineSpec, ctx: LaunchContext) -> LaunchPlan:
        from vmkit.spec import LinuxBoot

        self.check(spec)
        assert isinstance(spec.boot, LinuxBoot)
        accel = ctx.accelerator
        argv = [self.find_binary_or_name(), "-name", f"guest=vmkit-{spec.name},debug-threads=on"]
        if self.arch == "aarch64":
            argv += ["-machine", "virt", "-cpu", "max" if accel == "tcg" else "host"]
        else:
            argv += ["-machine", "q35"]
            if accel != "tcg":
                argv += ["-cpu", "host"]
        argv += ["-accel", accel]
        argv += ["-smp", str(spec.cpus), "-m", f"{spec.memory >> 20}M"]
        argv += ["-nodefaults", "-no-user-config", "-display", "none"]
        if is_linux():
            argv += [
                "-sandbox",
                "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            ]
        argv += [
            "-trace",
            f"enable=qemu_system_shutdown_request,file={qemu_escape(ctx.events_log)}",
        ]

        cmdline = spec.boot.cmdline
        if not re.search(r"(?:^|\s)console=", cmdline):
            cmdline = f"console={self.console_device()} {cmdline}".strip()
        argv += ["-kernel", str(spec.boot.kernel)]
        if spec.boot.initrd is not None:
            argv += ["-initrd", str(spec.boot.initrd)]
        argv += ["-append", cmdline]

        con, qmp = ctx.sockets["console"], ctx.sockets["qmp"]
        argv += [
            "-chardev",
            f"socket,id=serial0,path={qemu_escape(con)},server=on,wait=off,"
            f"logfile={qemu_escape(ctx.serial_log)},logappend=off",
            "-serial",
            "chardev:serial0",
            "-chardev",
            f"socket,id=qmp0,path={qemu_escape(qmp)},server=on,wait=off",
            "-mon",
            "chardev=qmp0,mode=control",
        ]
        for i, disk in enumerate(spec.disks):
            ro = "on" if disk.readonly else "off"
            argv += [
                "-blockdev",
                f"driver=file,node-name=file{i},filename={qemu_escape(disk.path)},read-only={ro}",
                "-blockdev",
                f"driver={disk.format},node-name=disk{i},file=file{i},read-only={ro}",
                "-device",
                f"virtio-blk-pci,drive=disk{i},id=vd{i}",
            ]
        for i, net in enumerate(spec.networks):
            mac = net.mac or stable_mac(spec.name, i)
            argv += [
                "-netdev",
                f"user,id=net{i}",
                "-device",
                f"virtio-net-pci,netdev=net{i},mac={mac},id=nic{i}",
            ]
        if spec.rng:
            argv += ["-device", "virtio-rng-pci"]
        if spec.balloon:
            argv += ["-device", "virtio-balloon-pci"]
        return LaunchPlan(argv=argv, sockets=dict(ctx.sockets), accelerator=accel)

    def find_binary_or_name(self) -> str:
        try:
            return self.find_binary()
        except Exception:
            return self.binary_names[0]

    def control_state(self, sockets: dict[str, str], timeout: float = 2.0) -> str | None:
        try:
            with QMP(sockets["qmp"], timeout=timeout) as q:
                status = q.execute("query-status")
        except (QMPError, OSError):
            return None
        return RUN_STATES.get(str(status.get("status")), "running")

    def request_powerdown(self, sockets: dict[str, str]) -> None:
        with QMP(sockets["qmp"]) as q:
            q.execute("system_powerdown")

    def exit_cause(self, ctx: LaunchContext) -> ExitCause | None:
        try:
            text = ctx.events_log.read_text(errors="replace")
        except FileNotFoundError:
            return None
        causes = [int(m) for m in _TRACE_RE.findall(text)]
        if not causes:
            return None
        label, clean = SHUTDOWN_CAUSES.get(causes[-1], (f"cause {causes[-1]}", False))
        return ExitCause(clean, label)
