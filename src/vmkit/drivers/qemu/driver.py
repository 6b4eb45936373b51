"""QEMU driver: spec -> `qemu-system-*` argv; control over QMP.

q35 (x86_64) or virt (aarch64), `-nodefaults`, the serial console on a Unix socket with a
logfile (so `vmkit console` can attach while serial.log keeps everything), QMP on a Unix
socket, seccomp sandbox on, and a trace of shutdown requests so vmkit can tell a guest
poweroff from a crash after the fact (it is not QEMU's parent by then).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vmkit import optstr
from vmkit.drivers import register
from vmkit.drivers.base import (
    Capabilities,
    Control,
    Driver,
    ExitCause,
    LaunchContext,
    LaunchPlan,
    RestorePlan,
    ShareServer,
    SwitchPort,
    TapFd,
)
from vmkit.errors import InvalidInput, NotSupported
from vmkit.hostinfo import is_linux, machine_arch
from vmkit.net.mac import nic_mac

TYPE_CHECKING = False  # not typing's: a running VM's `vmkit ls` loads this (plain.py)
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from vmkit.drivers.qemu_firmware import Firmware
    from vmkit.spec import MachineSpec, Network
    from vmkit.storage.kernel import KernelInfo

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
CTL_PORT_NAME = "org.vmkit.ctl"
SSH_PORT_NAME = "org.vmkit.ssh"
SSH_KEY_FILES = (
    "ssh_host_ed25519_key",
    "ssh_host_ed25519_key.pub",
    "known_hosts",
)  # one SSH connection at a time, for `vmkit ssh` (access/)
HOTPLUG_PORTS = 4
HOTPLUG_PREFIX = "hp"
MIGRATION_POLL = 0.01
STATE_FILE = "state.qemu"
SAVE_TIMEOUT = 600.0
UNPLUG_TIMEOUT = 30.0
ANNOUNCE_TIMEOUT = 10.0
EFI_VARS = "efi-vars.fd"  # the VM's own UEFI variable store (a copy of the template)
RUNTIME = "VMKIT_RUNTIME_DIR (a socket path)"
HOME = "VMKIT_HOME (the VM's folder)"
# QEMU's vhost-vsock-pci opens this; vmkit only checks it is there ($VMKIT_VHOST_VSOCK
# points the check elsewhere, which the tests use to drive real QEMU up to that open).
VHOST_VSOCK = "/dev/vhost-vsock"


def vhost_vsock_device() -> str:
    return os.environ.get("VMKIT_VHOST_VSOCK", VHOST_VSOCK)


_MIGRATING = ("setup", "active", "pre-switchover", "device", "wait-unplug")
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


def qemu_escape(value: str | Path, field: str = "a path") -> str:
    """QEMU's option syntax doubles commas inside a value (vmkit.optstr)."""
    return optstr.qemu(field, value)


def netdev_arg(net: Network, index: int, ctx: LaunchContext) -> tuple[str, Path | None]:
    """The -netdev value for one NIC, and the socket QEMU binds for it (switch ports)."""
    from vmkit.spec import parse_publish

    if net.mode in ("user", "nat"):
        value = f"user,id=net{index}"
        for item in net.publish:
            host_ip, host, guest, proto = parse_publish(item)
            value += f",hostfwd={proto}:{host_ip}:{host}-:{guest}"
        return value, None
    if net.mode == "switch":
        assert net.switch is not None
        local = ctx.sockets["qmp"].with_suffix(f".n{index}")
        remote = ctx.switch_sockets[net.switch]
        return (
            f"dgram,id=net{index},local.type=unix,local.path={qemu_escape(local, RUNTIME)},"
            f"remote.type=unix,remote.path={qemu_escape(remote, RUNTIME)}",
            local,
        )
    if net.mode == "tap":
        # vmkit opens the TAP (possibly in another netns) and passes the fd at start.
        return f"tap,id=net{index},fd={tap_fd_placeholder(index)}", None
    raise NotSupported(f"vmkit's QEMU driver has no network mode {net.mode!r}")


def tap_fd_placeholder(index: int) -> str:
    """Stands for the TAP fd in the argv until vmkit opens it (shown as is by --dry-run)."""
    return f"<tap{index}-fd>"


def ctl_fifos(path: Path) -> dict[str, Path]:
    """The two FIFOs of the control port's `pipe` chardev: QEMU reads PATH.in (host ->
    guest) and writes PATH.out (guest -> host)."""
    return {"ctl.in": Path(f"{path}.in"), "ctl.out": Path(f"{path}.out")}


def control_port_args(path: Path, ssh_path: Path | None = None) -> list[str]:
    """A virtio-serial port `org.vmkit.ctl` on a `pipe` chardev (FIFOs PATH.in/.out): vmkit
    asks a restored guest to take its new MACs and announce readiness again (see
    guest/init.sh). A pipe is always connected from the guest's view, so the guest agent's
    read blocks until the host writes (a Unix socket chardev makes it return EOF at once
    while no client is connected, and the agent had to poll). And `org.vmkit.ssh`, the
    guest's SSH server reached without a network (access/transport.py)."""
    argv = [
        "-device",
        "virtio-serial-pci,id=vser0",
        "-chardev",
        f"pipe,id=ctl0,path={qemu_escape(path, RUNTIME)}",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=ctl0,name={CTL_PORT_NAME}",
    ]
    if ssh_path is not None:
        argv += [
            "-chardev",
            f"socket,id=ssh0,path={qemu_escape(ssh_path)},server=on,wait=off",
            "-device",
            f"virtserialport,bus=vser0.0,chardev=ssh0,name={SSH_PORT_NAME}",
        ]
    return argv


def hotplug_port_args() -> list[str]:
    """Empty PCIe root ports: q35/virt's root bus cannot take hot-plugged devices."""
    argv: list[str] = []
    for i in range(HOTPLUG_PORTS):
        argv += ["-device", f"pcie-root-port,id={HOTPLUG_PREFIX}{i},bus=pcie.0,chassis={i + 1}"]
    return argv


@register
class QemuDriver(Driver):
    name = "qemu"
    emulates = True  # another architecture than the host's, with TCG
    vsock_cids_host_wide = True  # vhost-vsock: a CID in the host's AF_VSOCK space
    # with a snapshot or migration go the variable store and the guest's SSH host key (a
    # restored guest's memory holds it) with its pin (storage/sshkeys)
    vm_state_files: ClassVar[tuple[str, ...]] = (EFI_VARS, *SSH_KEY_FILES)
    features = Capabilities(
        boot_linux=True,
        guest_exec=True,  # vmkit ssh/exec: virtio-serial port org.vmkit.ssh, or the network
        guest_copy=True,
        arch_emulation=True,  # arch: another than the host's -> qemu-system-<arch>, TCG
        boot_efi=True,  # UEFI (OVMF/AAVMF from QEMU's firmware descriptors) from disk0
        disk_raw=True,
        disk_qcow2=True,
        disk_clone=True,
        cloud_init=True,
        net_none=True,
        net_user=True,
        net_switch=True,
        publish=True,
        shares=True,
        net_tap=True,
        rng=True,
        balloon=True,
        graceful_stop=True,
        kill=True,
        console=True,
        readiness=True,
        readopt=True,
        crash_detection=True,
    )
    socket_roles: ClassVar[dict[str, str]] = {
        "qmp": "qmp",
        "console": "con",
        "ctl": "ctl",
        "ssh": "ssh",
    }
    control_class: ClassVar[type[Control]]
    install_hint: ClassVar[str] = (
        "install QEMU (Debian/Ubuntu: `apt-get install qemu-system-x86` or "
        "`qemu-system-arm`; macOS: `brew install qemu`)"
    )

    def __init__(self, arch: str | None = None):
        super().__init__(arch)
        self.binary_names = (f"qemu-system-{self.arch}",)

    @classmethod
    def auto_usable(cls) -> bool:
        return True  # the fallback: KVM where it works, else TCG

    @classmethod
    def kernel_support(cls, info: KernelInfo) -> dict[str, str]:
        from vmkit.storage.kernel import KernelFormat, arm64_decompressible

        if info.arch == "x86_64":
            ok = info.format in (KernelFormat.BZIMAGE, KernelFormat.ELF_PVH)
            return {
                "qemu/x86_64": "yes" if ok else "no: QEMU boots an x86 ELF only with a PVH note"
            }
        if info.format == KernelFormat.ARM64_IMAGE:
            return {"qemu/aarch64": "yes"}
        if arm64_decompressible(info):
            return {"qemu/aarch64": "yes, once unpacked with `vmkit kernel extract FILE Image`"}
        return {"qemu/aarch64": "no: not an arm64 Image"}

    def check(self, spec: MachineSpec) -> None:
        from vmkit.spec import EfiBoot, MacosBoot

        if isinstance(spec.boot, MacosBoot):
            raise NotSupported("macOS guests run only on Apple silicon Macs: use driver: vfkit")
        self.check_rosetta(spec)
        if self.arch not in ("x86_64", "aarch64"):
            raise NotSupported(
                f"vmkit's QEMU driver supports x86_64 and aarch64 hosts, not {self.arch}"
            )
        if isinstance(spec.boot, EfiBoot):
            if not spec.disks:
                raise InvalidInput("boot.kind 'efi' needs a bootable disk image in disks")
            self.firmware(spec)  # no firmware installed: say which package, before create
        if spec.hugepages:
            raise NotSupported("hugepages: not wired for vmkit's QEMU driver yet; remove it")
        if spec.vsock_cid is not None:
            self.check_vsock(spec.vsock_cid)
        for i, disk in enumerate(spec.disks):
            if disk.iops is not None or disk.bandwidth is not None:
                raise NotSupported(
                    f"disks[{i}]: I/O limits (iops, bandwidth) are not wired for vmkit's QEMU "
                    "driver yet; use driver: cloud-hypervisor or remove them"
                )
        if spec.accelerator == "hvf" and is_linux():
            raise InvalidInput("accelerator: 'hvf' exists only on macOS; use kvm or tcg on Linux")
        if self.arch != machine_arch() and spec.accelerator not in ("auto", "tcg"):
            raise InvalidInput(
                f"accelerator: {spec.accelerator!r} runs only {machine_arch()} guests; an "
                f"{self.arch} guest (arch: {self.arch}) is emulated: use accelerator: tcg or auto"
            )

    @staticmethod
    def check_vsock(cid: int) -> None:
        """`vsock_cid` -> vhost-vsock-pci: the host kernel's vhost_vsock must be there."""
        if cid >= 2**32 - 1:
            raise InvalidInput(f"vsock_cid: {cid} is out of range (3 .. 4294967294)")
        device = vhost_vsock_device()
        if not os.path.exists(device):
            raise NotSupported(
                f"vsock_cid: QEMU's vhost-vsock needs {device}, which this host does not have "
                "(load the vhost_vsock module: `modprobe vhost_vsock`); remove vsock_cid to "
                "reach the guest over virtio-serial or the network"
            )

    def forwards_ports(self, net: dict[str, Any]) -> bool:
        return str(net.get("mode", "user")) in ("user", "nat")  # hostfwd; TAPs get the relay

    def firmware(self, spec: MachineSpec) -> Firmware:
        from vmkit.drivers.qemu_firmware import find_uefi, from_spec
        from vmkit.spec import EfiBoot

        assert isinstance(spec.boot, EfiBoot)
        if spec.boot.firmware is not None:
            return from_spec(spec.boot.firmware)
        return find_uefi(self.arch)

    def _ensure_efi_vars(self, spec: MachineSpec, vm_dir: Path) -> None:
        """The VM's own UEFI variable store, copied from the template on first boot."""
        from vmkit.spec import EfiBoot

        if not isinstance(spec.boot, EfiBoot):
            return
        template = self.firmware(spec).vars_template
        target = vm_dir / EFI_VARS
        if template is not None and not target.exists():
            tmp = target.with_name(f".{EFI_VARS}.tmp")
            import shutil

            shutil.copyfile(template, tmp)
            tmp.chmod(0o600)
            tmp.replace(target)

    def prepare(self, spec: MachineSpec, ctx: LaunchContext) -> None:
        self._ensure_efi_vars(spec, ctx.vm_dir)

    def boot_args(self, spec: MachineSpec, ctx: LaunchContext) -> list[str]:
        """-kernel/-initrd/-append for a Linux boot; the firmware flash for an EFI boot."""
        from vmkit.spec import LinuxBoot

        if not isinstance(spec.boot, LinuxBoot):
            fw = self.firmware(spec)
            if fw.vars_template is None:
                return ["-bios", optstr.check_plain("boot.firmware", fw.code)]
            return [
                "-drive",
                "if=pflash,format=raw,unit=0,readonly=on,file="
                + qemu_escape(fw.code, "boot.firmware"),
                "-drive",
                f"if=pflash,format=raw,unit=1,file={qemu_escape(ctx.vm_dir / EFI_VARS, HOME)}",
            ]
        cmdline = spec.boot.cmdline
        if not re.search(r"(?:^|\s)console=", cmdline):
            cmdline = f"console={self.console_device()} {cmdline}".strip()
        argv = ["-kernel", optstr.check_plain("boot.kernel", spec.boot.kernel)]
        if spec.boot.initrd is not None:
            argv += ["-initrd", optstr.check_plain("boot.initrd", spec.boot.initrd)]
        return [*argv, "-append", cmdline]

    def console_device(self) -> str:
        return "ttyAMA0" if self.arch == "aarch64" else "ttyS0"

    def plan(self, spec: MachineSpec, ctx: LaunchContext) -> LaunchPlan:
        from vmkit.spec import EfiBoot

        self.check(spec)
        efi = isinstance(spec.boot, EfiBoot)
        accel = ctx.accelerator
        argv = [self.binary_or_name(), "-name", f"guest=vmkit-{spec.name},debug-threads=on"]
        if self.arch == "aarch64":
            # TCG: QEMU's own pointer-auth algorithm; the architected one is slow to emulate
            cpu = "max,pauth-impdef=on" if accel == "tcg" else "host"
            argv += ["-machine", "virt", "-cpu", cpu]
        else:
            argv += ["-machine", "q35"]
            if accel != "tcg":
                argv += ["-cpu", "host"]
        argv += ["-accel", accel]
        smp = str(spec.cpus)
        if spec.max_cpus is not None and spec.max_cpus > spec.cpus:
            smp += f",maxcpus={spec.max_cpus}"
        if spec.topology is not None:
            t = spec.topology
            smp += (
                f",sockets={t.packages},dies={t.dies_per_package},"
                f"cores={t.cores_per_die},threads={t.threads_per_core}"
            )
        argv += ["-smp", smp, "-m", f"{spec.memory >> 20}M"]
        if spec.shares:  # vhost-user devices need guest RAM the sidecar can map
            argv += [
                "-object",
                f"memory-backend-memfd,id=mem,size={spec.memory >> 20}M,share=on",
                "-machine",
                "memory-backend=mem",
            ]
        argv += ["-nodefaults", "-no-user-config", "-display", "none"]
        if is_linux():
            argv += [
                "-sandbox",
                "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            ]
        argv += [
            "-trace",
            f"enable=qemu_system_shutdown_request,file={qemu_escape(ctx.events_log, HOME)}",
        ]

        argv += self.boot_args(spec, ctx)

        con, qmp = ctx.sockets["console"], ctx.sockets["qmp"]
        argv += [
            "-chardev",
            f"socket,id=serial0,path={qemu_escape(con, RUNTIME)},server=on,wait=off,"
            f"logfile={qemu_escape(ctx.serial_log, 'serial_log')},logappend=off",
            "-serial",
            "chardev:serial0",
            "-chardev",
            f"socket,id=qmp0,path={qemu_escape(qmp, RUNTIME)},server=on,wait=off",
            "-mon",
            "chardev=qmp0,mode=control",
        ]
        for i, disk in enumerate(spec.disks):
            ro = "on" if disk.readonly else "off"
            argv += [
                "-blockdev",
                f"driver=file,node-name=file{i},"
                f"filename={qemu_escape(disk.file, f'disks[{i}].path')},read-only={ro}",
                "-blockdev",
                f"driver={disk.format},node-name=disk{i},file=file{i},read-only={ro}",
                "-device",
                f"virtio-blk-pci,drive=disk{i},id=vd{i}" + (f",bootindex={i}" if efi else ""),
            ]
        plan = LaunchPlan(argv=argv, sockets=dict(ctx.sockets), accelerator=accel)
        for i, net in enumerate(spec.networks):
            mac = nic_mac(spec.name, i, net.mac)
            netdev, local = netdev_arg(net, i, ctx)
            if local is not None:
                assert net.switch is not None
                plan.switch_ports.append(SwitchPort(net.switch, local))
            if net.mode == "tap":
                plan.tap_fds.append(TapFd(i, tap_fd_placeholder(i)))
            argv += [
                "-netdev",
                netdev,
                "-device",
                f"virtio-net-pci,netdev=net{i},mac={mac},id=nic{i}",
            ]
        if spec.rng:
            argv += ["-device", "virtio-rng-pci"]
        if spec.balloon:
            argv += ["-device", "virtio-balloon-pci"]
        if spec.vsock_cid is not None:  # the guest is CID N in the host's AF_VSOCK space
            argv += ["-device", f"vhost-vsock-pci,id=vsock0,guest-cid={spec.vsock_cid}"]
        for i, share in enumerate(spec.shares):
            path = ctx.sockets["qmp"].with_suffix(f".fs{i}")
            plan.shares.append(ShareServer(i, path))
            argv += [
                "-chardev",
                f"socket,id=fs{i},path={qemu_escape(path, RUNTIME)}",
                "-device",
                f"vhost-user-fs-pci,chardev=fs{i},tag={qemu_escape(share.tag, f'shares[{i}].tag')}",
            ]
        argv += control_port_args(ctx.sockets["ctl"], ctx.sockets.get("ssh"))
        plan.fifos.update(ctl_fifos(ctx.sockets["ctl"]))
        plan.sockets.pop("ctl", None)  # the FIFOs' common prefix, not a file of its own
        argv += hotplug_port_args()
        return plan

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

    # ---- advanced lifecycle over QMP ---------------------------------------------------
    def plan_restore(
        self, spec: MachineSpec, ctx: LaunchContext, state_dir: Path, meta: dict[str, Any]
    ) -> RestorePlan:
        self._ensure_efi_vars(spec, ctx.vm_dir)  # migrated with RAM; the file must exist
        plan = self.plan(spec, ctx)
        if ram := meta.get("shared_ram"):
            from vmkit.drivers.qemu import shared_ram

            if spec.shares:  # snapshots refuse shares; their RAM is a memfd
                raise InvalidInput("a snapshot with shared RAM cannot restore with shares")
            path = state_dir / str(ram["file"])
            plan.argv += shared_ram.backend_args(self.arch, spec.memory, path, share=False)
        plan.argv += ["-incoming", "defer"]
        return RestorePlan(plan, state_dir, meta)

    def share_ram(
        self,
        spec: MachineSpec,
        staging: Path,
        state: dict[str, Any],
        disks: list[dict[str, Any]],
        accelerator: str,
    ) -> dict[str, Any]:
        from vmkit.drivers.qemu import shared_ram

        if (why := shared_ram.refusal(spec)) is not None:
            raise NotSupported(f"snapshot RAM not shared: {why}")
        return shared_ram.convert(self, spec, staging, state, disks, accelerator)

    def plan_incoming(self, spec: MachineSpec, ctx: LaunchContext, uri: str) -> LaunchPlan:
        self._ensure_efi_vars(spec, ctx.vm_dir)
        plan = self.plan(spec, ctx)
        plan.argv += ["-incoming", uri]
        return plan
