"""vfkit driver (macOS, Virtualization.framework), and krunkit as a variant of it.

spec -> `vfkit` argv in vfkit's own grammar and canonical key order (the values:
vfkit_argv; what it refuses first: checks.py); control over vfkit's REST API on a Unix
socket (vfkit_api). vfkit splits every `--device` value on *every* comma with no quoting, so
a path with a comma cannot be passed: it is refused up front, naming the field. On Apple
Silicon the kernel must be a raw arm64 `Image`: a compressed vmlinuz or EFI zboot kernel is
decompressed into the VM's folder before launch (storage.kernel).

krunkit (libkrun) takes the same command-line style with these differences: EFI boot only,
qcow2 disks (`format=`), networking only through a userspace switch (`type=unixgram`), and a
REST API with GET /vm/state and POST Stop only (no HardStop, Pause, Resume or inspect).

None of this has run on a Mac yet: its argv is checked by vfkit's own parsing code
(../shared/tools/vfkit-parse) and the REST client against a scripted double (tests/contract),
so docs/capabilities.md says "contract-tested".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vmkit.drivers import dhcpd_leases, register
from vmkit.drivers.base import (
    Capabilities,
    Control,
    Driver,
    ExitCause,
    LaunchContext,
    LaunchPlan,
)
from vmkit.drivers.vfkit_argv import (
    Device,
    boot_value,
    efi_bootloader,
    linux_bootloader,
    macos_bootloader,
    restful_uri,
    rosetta,
    ssh_vsock_socket,
    switch_socket,
    usb_mass_storage,
    value,
    virtio_balloon,
    virtio_blk,
    virtio_fs,
    virtio_net_nat,
    virtio_net_unix,
    virtio_net_unixgram,
    virtio_rng,
    virtio_serial_log,
    virtio_vsock,
    vmnet_socket,
)
from vmkit.drivers.vmm_version import Version, format_version, installed_version
from vmkit.errors import InvalidInput, NotSupported, VMStateError
from vmkit.hostinfo import machine_arch
from vmkit.storage import kernel as kernelfmt

if TYPE_CHECKING:
    from collections.abc import Callable

    from vmkit.spec import MachineSpec

MAX_MACOS_GUESTS = 2  # running at once per Mac
ROSETTA_TAG = "rosetta"  # the guest mounts it: mount -t virtiofs rosetta /mnt/rosetta


# ---- the drivers -----------------------------------------------------------------------------


@register
class VfkitDriver(Driver):
    name = "vfkit"
    binary_names: tuple[str, ...] = ("vfkit",)
    install_hint: ClassVar[str] = (
        "vfkit runs only on macOS: `brew install vfkit` (Podman's macOS installer ships it too)"
    )
    not_yet_run_on: ClassVar[str | None] = "macOS"
    socket_roles: ClassVar[dict[str, str]] = {"rest": "rest"}
    control_class: ClassVar[type[Control]]
    features = Capabilities(
        boot_linux=True,
        boot_efi=True,
        boot_macos=True,
        disk_raw=True,  # read-only disks go in as usb-mass-storage,readonly
        disk_clone=True,  # APFS clonefile on a Mac; a qcow2 base becomes a raw copy
        cloud_init=True,  # the seed ISO as read-only usb-mass-storage (label cidata)
        net_none=True,
        net_user=True,  # virtio-net,nat (vmnet's NAT and DHCP)
        net_switch=True,  # virtio-net,unixSocketPath= the switch's socket (vfkit sends VFKT)
        net_vmnet=True,  # the same, on vmnet-helper's socket (net/vmnet)
        shares=True,  # virtio-fs,sharedDir=,mountTag= served by vfkit (read-write only)
        publish=True,  # TCP, through vmkit's relay to the NAT address (net/portfwd)
        rosetta=True,  # rosetta,mountTag=rosetta (Apple silicon)
        rng=True,
        balloon=True,
        graceful_stop=True,  # Stop -> HardStop -> SIGTERM -> SIGKILL
        kill=True,
        readiness=True,  # the readiness line on virtio-serial (hvc0) -> serial.log
        readopt=True,
        crash_detection=True,  # vmm.log says "VM is stopped" after a guest poweroff
        guest_exec=True,  # vmkit ssh/exec: virtio-vsock port 22 (vsock_cid), or a published 22
        guest_copy=True,
    )
    # The first release of each flag/device vmkit emits, where it is newer than the oldest
    # supported one, read from the upstream tags (crc-org/vfkit): --pidfile v0.6.2,
    # virtio-balloon v0.6.1, virtio-net type=unixgram v0.6.2. --pidfile is optional (vmkit
    # does not read it): older vfkit just runs without it; the others are refused.
    min_versions: ClassVar[dict[str, Version]] = {
        "--pidfile": (0, 6, 2),
        "virtio-balloon": (0, 6, 1),
        "usb-mass-storage": (0, 5, 0),
        "virtio-blk deviceId": (0, 5, 0),
        "virtio-net type=unixgram": (0, 6, 2),
    }
    # krunkit's differences.
    efi_only: ClassVar[bool] = False
    reads_qcow2: ClassVar[bool] = False
    readonly_disks: ClassVar[bool] = True
    has_nat: ClassVar[bool] = True
    writes_pidfile: ClassVar[bool] = True
    has_hard_stop: ClassVar[bool] = True
    efi_always_create: ClassVar[bool] = False
    splits_on_equals: ClassVar[bool] = False  # krunkit: every option on every `=`

    @classmethod
    def kernel_support(cls, info: kernelfmt.KernelInfo) -> dict[str, str]:
        KernelFormat = kernelfmt.KernelFormat
        if cls.efi_only:
            return {cls.name: "no: krunkit boots only through EFI firmware from a disk image"}
        if info.arch == "x86_64":
            ok = info.format in (KernelFormat.BZIMAGE, KernelFormat.ELF, KernelFormat.ELF_PVH)
            return {"vfkit/x86_64": "yes (Intel Macs)" if ok else "no"}
        if info.format == KernelFormat.ARM64_IMAGE:
            return {"vfkit/aarch64": "yes"}
        if kernelfmt.arm64_decompressible(info):
            return {"vfkit/aarch64": "yes: vmkit decompresses it to a raw Image in the VM's folder"}
        return {"vfkit/aarch64": "no: Virtualization.framework needs an uncompressed arm64 Image"}

    @classmethod
    def auto_usable(cls) -> bool:
        return True  # a Mac with vfkit on PATH: drivers.AUTO_PREREQ, checked before this

    def __init__(
        self,
        arch: str | None = None,
        version: Version | None = None,
        leases: Path | None = None,
    ):
        super().__init__(arch or machine_arch())
        self._version = version
        self.leases = leases

    # ---- checks ----------------------------------------------------------------------------
    def check(self, spec: MachineSpec) -> None:
        from vmkit.drivers.vfkit.checks import check

        check(self, spec)

    def field_value(self, field: str, raw: str | Path) -> str:
        """`value`, and for krunkit no `=` either: krunkit splits each option on every `=`
        (val_parse) and refuses a value containing one."""
        text = value(field, raw)
        if self.splits_on_equals and "=" in text:
            raise InvalidInput(
                f"{field}: {text!r} contains '='; {self.name} splits its options on every '=' "
                "and cannot take it (rename or move the file, or use driver: vfkit)"
            )
        return text

    # ---- argv ------------------------------------------------------------------------------
    def version(self) -> Version | None:
        """The installed binary's version (None when it is not installed: no gating)."""
        if self._version is not None:
            return self._version
        try:
            return installed_version(self.find_binary())
        except Exception:
            return None

    def boot_kernel(self, kernel: Path, ctx: LaunchContext) -> Path:
        """The kernel file vfkit gets: the raw Image itself, or the one `prepare` writes."""
        if self.arch != "aarch64":
            return kernel
        try:
            with kernel.open("rb") as f:
                head = f.read(0x40)
        except OSError:
            return kernel
        return kernel if kernelfmt.is_arm64_image(head) else ctx.vm_dir / "Image"

    def console_cmdline(self, cmdline: str) -> str:
        """vfkit's virtio-serial is hvc0: make it the console (the last console= wins)."""
        if re.search(r"(?:^|\s)console=hvc0(?:\s|$)", cmdline):
            return cmdline
        return f"{cmdline} console=hvc0".strip()

    def devices(self, spec: MachineSpec, ctx: LaunchContext) -> tuple[list[Device], list[str]]:
        """The devices in argv order, and the version-gated features they use."""
        from vmkit.net.mac import nic_mac

        devs: list[Device] = []
        used: list[str] = []
        for i, disk in enumerate(spec.disks):
            field = f"disks[{i}].path"
            self.field_value(field, disk.file)
            if self.reads_qcow2:
                devs.append(virtio_blk(disk.file, fmt=disk.format))
            elif disk.readonly:
                devs.append(usb_mass_storage(disk.file, readonly=True))
                used.append("usb-mass-storage")
            else:
                devs.append(virtio_blk(disk.file, device_id=f"vmkit-disk{i}"))
                used.append("virtio-blk deviceId")
        for i, net in enumerate(spec.networks):
            mac = nic_mac(spec.name, i, net.mac)
            if net.mode == "switch":
                assert net.switch is not None
                sock = switch_socket(ctx, net.switch)
                self.field_value(
                    f"networks[{i}]: the switch socket (under VMKIT_RUNTIME_DIR)", sock
                )
                devs.append(self.switch_nic(sock, mac))
                used.extend(self.switch_nic_features)
            elif net.mode == "vmnet":  # vmnet-helper's socket speaks the switch's protocol
                sock = vmnet_socket(ctx, i)
                self.field_value(f"networks[{i}]: vmnet socket (under VMKIT_RUNTIME_DIR)", sock)
                devs.append(self.switch_nic(sock, mac))
                used.extend(self.switch_nic_features)
            else:
                devs.append(virtio_net_nat(mac))
        for share in spec.shares:
            devs.append(virtio_fs(share.host, share.tag))
        if spec.rosetta:
            devs.append(rosetta(ROSETTA_TAG))  # vfkit fails clearly if Rosetta is missing
        devs.append(virtio_serial_log(ctx.serial_log))
        if spec.vsock_cid is not None:  # vfkit listens there, dials guest port 22 per client
            devs.append(virtio_vsock(22, ssh_vsock_socket(ctx), listen=False))
            used.append("virtio-vsock connect")
        if spec.rng and self.features.rng:
            devs.append(virtio_rng())
        if spec.balloon:
            devs.append(virtio_balloon())
            used.append("virtio-balloon")
        return devs, used

    switch_nic_features: ClassVar[tuple[str, ...]] = ()

    def switch_nic(self, socket_path: Path, mac: str) -> Device:
        """A NIC on vmkit's switch: vfkit binds its own end beside the switch socket,
        connects, and sends `VFKT` so the switch learns the port before the guest speaks."""
        return virtio_net_unix(socket_path, mac)

    def plan(self, spec: MachineSpec, ctx: LaunchContext) -> LaunchPlan:
        from vmkit.spec import LinuxBoot, MacosBoot

        self.check(spec)
        boot_value("the VM's folder (under VMKIT_HOME)", ctx.vm_dir)
        self.field_value("the VM's folder (under VMKIT_HOME)", ctx.vm_dir)
        if spec.serial_log is None:
            self.field_value("the VM's serial.log (under VMKIT_HOME)", ctx.serial_log)
        argv = [self.binary_or_name(), "--cpus", str(spec.cpus), "--memory", str(spec.memory >> 20)]
        if isinstance(spec.boot, LinuxBoot):
            kernel = self.boot_kernel(spec.boot.kernel, ctx)
            cmdline = self.console_cmdline(spec.boot.cmdline)
            argv += ["--bootloader", linux_bootloader(kernel, spec.boot.initrd, cmdline)]
        elif isinstance(spec.boot, MacosBoot):
            argv += ["--bootloader", macos_bootloader(spec.boot)]
        else:
            store = ctx.vm_dir / "efi-variable-store"
            create = self.efi_always_create or not store.exists()
            argv += ["--bootloader", efi_bootloader(store, create)]
        devs, used = self.devices(spec, ctx)
        for dev in devs:
            argv += ["--device", dev.render()]
        argv += ["--restful-uri", self.restful_uri(ctx.sockets["rest"])]
        if self.writes_pidfile and self.knows("--pidfile"):
            argv += ["--pidfile", value("pidfile", ctx.vm_dir / "vmm.pid")]
        self.check_versions(used)
        sockets = dict(ctx.sockets)
        for i, net in enumerate(spec.networks):
            if net.mode == "vmnet":
                sockets[f"vmnet{i}"] = vmnet_socket(ctx, i)
        if spec.vsock_cid is not None:  # removed at stop; access/transport.py finds it
            sockets["vsock-ssh"] = ssh_vsock_socket(ctx)
        return LaunchPlan(argv=argv, sockets=sockets, accelerator="hvf")

    def restful_uri(self, socket_path: Path) -> str:
        return restful_uri(socket_path)

    def knows(self, feature: str) -> bool:
        """Whether the installed binary has `feature` (True when its version is unknown)."""
        have, need = self.version(), self.min_versions.get(feature)
        return have is None or need is None or have >= need

    def check_versions(self, used: list[str]) -> None:
        have = self.version()
        if have is None:
            return
        for feature in used:
            need = self.min_versions.get(feature)
            if need is not None and have < need:
                raise NotSupported(
                    f"the installed {self.name} {format_version(have)} does not know {feature}; "
                    f"it needs {self.name} >= {format_version(need)} "
                    f"(`brew upgrade {self.name}`)"
                )

    def host_limits(self, spec: MachineSpec, running: Callable[[], list[dict[str, Any]]]) -> None:
        """At most 2 macOS guests run at once on a Mac (a macOS kernel quota): say so before
        launching a third, instead of letting vfkit fail."""
        from vmkit.spec import MacosBoot

        if not isinstance(spec.boot, MacosBoot):
            return
        macs = [r["name"] for r in running() if r.get("boot", {}).get("kind") == "macos"]
        if len(macs) >= MAX_MACOS_GUESTS:
            raise VMStateError(
                f"at most {MAX_MACOS_GUESTS} macOS guests can run at once on a Mac (a macOS "
                f"limit); {', '.join(sorted(macs))} are running: stop one first"
            )

    def prepare(self, spec: MachineSpec, ctx: LaunchContext) -> None:
        """Decompress the kernel into the VM dir if vfkit needs it; start serial.log afresh
        (vfkit appends to it, and an old readiness line must not count for this boot)."""
        from vmkit.spec import LinuxBoot, MacosBoot

        ctx.serial_log.unlink(missing_ok=True)
        if isinstance(spec.boot, MacosBoot):
            self._remember_leases(spec.to_json(), ctx.vm_dir)
        if not isinstance(spec.boot, LinuxBoot):
            return
        target = self.boot_kernel(spec.boot.kernel, ctx)
        if target != spec.boot.kernel:
            try:
                kernelfmt.prepare_arm64_image(spec.boot.kernel, target)
            except kernelfmt.KernelFormatError as exc:
                raise InvalidInput(f"boot.kernel: {spec.boot.kernel}: {exc}") from None

    LEASES_BEFORE = "dhcp-leases-before.json"

    @staticmethod
    def _nat_macs(spec: dict[str, Any]) -> list[str]:
        from vmkit.net.mac import nic_mac

        return [
            nic_mac(str(spec["name"]), i, net.get("mac"))
            for i, net in enumerate(spec.get("networks") or [])
            if net.get("mode", "user") in ("user", "nat")
            or (net.get("mode") == "vmnet" and net.get("vmnet") in ("shared", "host"))
        ]

    def _remember_leases(self, spec: dict[str, Any], vm_dir: Path) -> None:
        """Before a macOS guest boots: the expiry of each NAT MAC's current lease, so only a
        lease granted in this boot (a later expiry) counts as the guest being up."""
        before = {}
        for mac in self._nat_macs(spec):
            lease = dhcpd_leases.lease_for_mac(mac, self.leases)
            before[mac] = 0 if lease is None else lease.expires
        (vm_dir / self.LEASES_BEFORE).write_text(json.dumps(before))

    def guest_ip(self, spec: dict[str, Any]) -> str | None:
        """From macOS's DHCP leases by the NIC's MAC (vfkit has no API for it)."""
        for mac in self._nat_macs(spec):  # vmnet's DHCP leases only NAT NICs
            ip = dhcpd_leases.ip_for_mac(mac, self.leases)
            if ip is not None:
                return ip
        return None

    def exit_cause(self, ctx: LaunchContext) -> ExitCause | None:
        """vfkit logs (logrus) `msg="VM is stopped"` after the guest stopped, and
        `virtualization error` when Virtualization.framework failed."""
        try:
            text = (ctx.vm_dir / "vmm.log").read_text(errors="replace")
        except FileNotFoundError:
            return None
        text = text.rsplit("--- vmkit: starting", 1)[-1]
        if "VM is stopped" in text:
            return ExitCause(True, "guest stopped")
        m = re.search(r"(?:virtualization error|level=(?:fatal|error))[^\n]*", text)
        if m:
            return ExitCause(False, f"vfkit error: {m.group(0).strip()}")
        return None


@register
class KrunkitDriver(VfkitDriver):
    """krunkit: vfkit's command line on libkrun (Apple Silicon, macOS 14+, GPU via Venus)."""

    name = "krunkit"
    binary_names = ("krunkit",)
    install_hint: ClassVar[str] = (
        "krunkit runs only on Apple Silicon Macs (macOS 14+): "
        "`brew tap slp/krunkit && brew install krunkit`"
    )
    features = Capabilities(
        boot_efi=True,
        disk_raw=True,  # read-write only
        disk_qcow2=True,
        disk_clone=True,  # APFS clonefile, or a qcow2 overlay of a qcow2 base
        # no cloud_init: the seed ISO goes in read-only, and krunkit has no read-only disks
        net_none=True,
        net_switch=True,  # virtio-net,type=unixgram,path=<switch socket>,vfkitMagic=on
        net_vmnet=True,  # the same, on vmnet-helper's socket (net/vmnet)
        shares=True,  # virtio-fs,sharedDir=,mountTag= (read-write only)
        # no rng: krunkit parses virtio-rng but does not attach it (virtio.rs), so vmkit
        # does not pass it
        graceful_stop=True,  # Stop -> SIGTERM -> SIGKILL (no HardStop in krunkit's REST)
        kill=True,
        readiness=True,
        readopt=True,
        guest_exec=True,  # vmkit ssh/exec: virtio-vsock port 22 (vsock_cid), krunkit >= 1.2
        guest_copy=True,
    )
    # krunkit v1.0.0 brought `type=unixgram,path=` and `vfkitMagic`; 0.2.x knew only
    # `unixSocketPath=` (gvproxy) with a required `mac=` (containers/krunkit tags).
    # `virtio-vsock,...,connect` (host-initiated connections): libkrun/krunkit PR #87, merged
    # December 2025, after 1.1.x; the stored sources carry it with Cargo version 1.2.x.
    min_versions: ClassVar[dict[str, Version]] = {
        "virtio-net type=unixgram": (1, 0, 0),
        "virtio-net vfkitMagic": (1, 0, 0),
        "virtio-vsock connect": (1, 2, 0),
    }
    switch_nic_features = ("virtio-net type=unixgram", "virtio-net vfkitMagic")
    efi_only = True
    reads_qcow2 = True
    readonly_disks = False  # krunkit's virtio-blk has no read-only option
    has_nat = False
    writes_pidfile = False
    has_hard_stop = False
    auto_pick = False  # only when asked for: `driver: krunkit`
    efi_always_create = True  # its parser takes exactly `efi,variable-store=P,create`
    splits_on_equals = True
    MAX_CPUS = 255  # krunkit's --cpus is a u8

    def check(self, spec: MachineSpec) -> None:
        super().check(spec)
        if spec.cpus > self.MAX_CPUS:
            raise InvalidInput(
                f"cpus: {spec.cpus} is too many: krunkit takes at most {self.MAX_CPUS} "
                "(its --cpus is an 8-bit number)"
            )

    def restful_uri(self, socket_path: Path) -> str:
        """krunkit's own URI parser is not Go's: it gets the path only when no character
        needs escaping, and otherwise a clear refusal."""
        uri = restful_uri(socket_path)
        if uri != f"unix://{socket_path}":
            raise InvalidInput(
                f"REST socket path {socket_path}: krunkit cannot take a socket path with "
                "characters that need URI escaping: set VMKIT_RUNTIME_DIR to a plain directory"
            )
        return uri

    def switch_nic(self, socket_path: Path, mac: str) -> Device:
        """krunkit takes only the `type=unixgram` form; vfkitMagic=on has it announce
        itself as vfkit does (offloading stays off: the switch forwards plain frames)."""
        return virtio_net_unixgram(socket_path, mac, vfkit_magic=True)

    def exit_cause(self, ctx: LaunchContext) -> ExitCause | None:
        return None  # krunkit's log lines are not known yet: exits read as unexplained
