"""Cloud Hypervisor driver, API mode: the VMM starts with only `--api-socket` (and an event
monitor); the VM is described by a `vm.create` body and booted with `vm.boot`, so
`--dry-run` shows every request, and pause, snapshot/restore, hotplug and migration all go
through the same REST API. Stop presses the power button and only then escalates
(`vm.shutdown` + `vmm.shutdown`, SIGTERM, SIGKILL): CH treats SIGTERM as an immediate exit.

TAP NICs are not named in `vm.create` (CH would open the TAP by name in its own network
namespace and put its default 192.168.249.1/24 on it): vmkit opens each TAP itself and hands
CH the fd with `vm.add-net` (SCM_RIGHTS) between `vm.create` and `vm.boot`, as libvirt does.

Run against the real Cloud Hypervisor v54 at VMM level (tests/e2e/test_ch_vmm.py); where
real CH differs from its spec, vmkit reads CH's own files (ch_facts).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vmkit import optstr
from vmkit.drivers import ch_facts, register
from vmkit.drivers.base import (
    ApiRequest,
    Capabilities,
    Control,
    Driver,
    ExitCause,
    LaunchContext,
    LaunchPlan,
    RestorePlan,
    ShareServer,
    TapRef,
)
from vmkit.errors import InvalidInput, NotFound, NotSupported, VMFailed
from vmkit.hostinfo import machine_arch
from vmkit.net.mac import nic_mac

if TYPE_CHECKING:
    from vmkit.spec import Disk, MachineSpec, Network
    from vmkit.storage.kernel import KernelInfo

STATES = {
    "Created": "starting",
    "Running": "running",
    "Paused": "paused",
    "BreakPoint": "paused",  # stopped in the guest debugger
    "Shutdown": "stopping",
}
# Event-monitor events after which the VMM is on its way out (guest poweroff, vm.shutdown,
# vmm.shutdown all end with vm:shutdown / vm:deleted / vmm:shutdown).
_FINAL_EVENTS = {"vm:shutdown", "vm:deleted", "vmm:shutdown"}
_START_EVENTS = {"vm:booted", "vm:rebooted", "vm:restored"}
HOTPLUG_BLOCK = 128 << 20  # CH's ACPI memory hotplug adds whole 128 MiB sections
HUGEPAGE = 2 << 20  # CH's default huge page size (the host's default, 2 MiB on x86 and arm64)


FIRMWARE_ENV = "VMKIT_CH_FIRMWARE"
FIRMWARE_DIRS = ("/usr/share/cloud-hypervisor", "/usr/local/share/cloud-hypervisor")
FIRMWARE_NAMES = ("CLOUDHV.fd", "hypervisor-fw")  # edk2's CloudHv build; rust-hypervisor-fw


def efi_firmware(spec: MachineSpec) -> Path:
    """The firmware CH boots a disk with: boot.firmware, $VMKIT_CH_FIRMWARE, or a known
    install location. Neither build is packaged in Debian, so say where to get one."""
    from vmkit.spec import EfiBoot

    assert isinstance(spec.boot, EfiBoot)
    if spec.boot.firmware is not None:
        return spec.boot.firmware
    env = os.environ.get(FIRMWARE_ENV)
    candidates = [Path(env)] if env else []
    candidates += [Path(d) / n for d in FIRMWARE_DIRS for n in FIRMWARE_NAMES]
    for path in candidates:
        if path.is_file():
            return path
    raise NotFound(
        "boot.kind 'efi' on Cloud Hypervisor needs its firmware: download CLOUDHV.fd "
        "(github.com/cloud-hypervisor/edk2 releases) or hypervisor-fw "
        "(github.com/cloud-hypervisor/rust-hypervisor-firmware releases) and give it as "
        f"boot.firmware or ${FIRMWARE_ENV}"
    )


def vm_config(spec: MachineSpec, ctx: LaunchContext) -> dict[str, Any]:
    """The `vm.create` body (VmConfig) for `spec`."""
    from vmkit.spec import LinuxBoot

    payload: dict[str, Any]
    if isinstance(spec.boot, LinuxBoot):
        payload = {"kernel": str(kernel_for(spec.boot.kernel, ctx))}
        cmdline = spec.boot.cmdline
        if "console=" not in cmdline:
            cmdline = f"console={console_device()} {cmdline}".strip()
        payload["cmdline"] = cmdline
        if spec.boot.initrd is not None:
            payload["initramfs"] = str(spec.boot.initrd)
    else:
        payload = {"firmware": str(efi_firmware(spec))}
    config: dict[str, Any] = {
        "payload": payload,
        "cpus": {"boot_vcpus": spec.cpus, "max_vcpus": spec.max_cpus or spec.cpus},
        # shared: needed by virtio-fs and by local (fd-passing) live migration
        "memory": {"size": spec.memory, "shared": True},
        "serial": {"mode": "File", "file": str(ctx.serial_log)},
        "console": {"mode": "Off"},
    }
    if spec.topology is not None:
        config["cpus"]["topology"] = spec.topology.to_json()
    if spec.hugepages:
        config["memory"]["hugepages"] = True
    if spec.vsock_cid is not None:
        config["vsock"] = {
            "cid": spec.vsock_cid,
            "socket": str(extra_sockets(spec, ctx)["vsock"]),
            "id": "vsock0",
        }
    if spec.max_memory is not None and spec.max_memory > spec.memory:
        config["memory"]["hotplug_size"] = spec.max_memory - spec.memory
    if spec.disks:
        config["disks"] = [disk_config(d, f"disk{i}") for i, d in enumerate(spec.disks)]
    if spec.rng:
        config["rng"] = {"src": "/dev/urandom"}
    if spec.balloon:
        config["balloon"] = {"size": 0, "deflate_on_oom": True}
    if spec.shares:
        config["fs"] = [
            {
                "tag": s.tag,
                "socket": str(server.socket),
                "num_queues": 1,
                "queue_size": 1024,
                "id": f"fs{i}",
            }
            for (i, s), server in zip(enumerate(spec.shares), share_servers(spec, ctx), strict=True)
        ]
    return config


def console_device() -> str:
    """The guest's name for CH's serial port: the 8250 UART on x86, the PL011 on arm64."""
    return "ttyAMA0" if machine_arch() == "aarch64" else "ttyS0"


def share_servers(spec: MachineSpec, ctx: LaunchContext) -> list[ShareServer]:
    """One virtiofsd socket per share, next to the API's (vmkit starts each virtiofsd
    there before launch)."""
    api = ctx.sockets["api"]
    return [ShareServer(i, api.with_suffix(f".fs{i}")) for i in range(len(spec.shares))]


def extra_sockets(spec: MachineSpec, ctx: LaunchContext) -> dict[str, Path]:
    """Sockets besides the API's, next to it: the vsock's (CH listens on it)."""
    if spec.vsock_cid is not None:
        return {"vsock": ctx.sockets["api"].with_suffix(".vsock")}
    return {}


def net_requests(spec: MachineSpec) -> list[ApiRequest]:
    """One `vm.add-net` per NIC, each carrying its TAP's fd."""
    out: list[ApiRequest] = []
    for i, net in enumerate(spec.networks):
        body = net_config(net, f"net{i}", nic_mac(spec.name, i, net.mac))
        tap = TapRef(body.pop("tap"), net.netns, net.bridge)
        out.append(ApiRequest("PUT", "vm.add-net", body, tap))
    return out


def kernel_for(kernel: Path, ctx: LaunchContext) -> Path:
    """CH boots a PVH ELF vmlinux: for a bzImage, the vmlinux vmkit extracts into the VM dir
    (at start, by `prepare`; --dry-run only names it)."""
    from vmkit.storage.kernel import is_bzimage

    try:
        with kernel.open("rb") as f:
            head = f.read(1024)
    except OSError:
        return kernel  # reported as missing by the spec check
    return ctx.vm_dir / "vmlinux" if is_bzimage(head) else kernel


def disk_config(disk: Disk, device_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": str(disk.file),
        "readonly": disk.readonly,
        "image_type": "Qcow2" if disk.format == "qcow2" else "Raw",
        "id": device_id,
    }
    if disk.format == "qcow2" and ch_facts.has_backing_file(disk.file):
        # CH refuses an image with a backing file ("Maximum disk nesting depth exceeded")
        # unless told to open it: every qcow2 overlay (vmkit's clones included) needs this.
        out["backing_files"] = True
    limits: dict[str, Any] = {}
    if disk.bandwidth is not None:  # token buckets refilled every second
        limits["bandwidth"] = {"size": disk.bandwidth, "refill_time": 1000}
    if disk.iops is not None:
        limits["ops"] = {"size": disk.iops, "refill_time": 1000}
    if limits:
        out["rate_limiter_config"] = limits
    return out


def net_config(net: Network, device_id: str, mac: str) -> dict[str, Any]:
    if net.mode != "tap":
        raise NotSupported(
            f"Cloud Hypervisor has no {net.mode!r} networking (no user-mode NAT, no "
            "datagram sockets); use a TAP (`--net tap:IFNAME`) or driver: qemu"
        )
    # one queue pair: a single, non-multiqueue TAP fd
    return {"tap": net.tap, "mac": mac, "id": device_id, "num_queues": 2}


def restored_config(saved: dict[str, Any], spec: MachineSpec, ctx: LaunchContext) -> dict[str, Any]:
    """The snapshot's config.json re-pointed at the restored VM's own files.

    CH restores the devices config.json names, so left as saved it would open the source
    VM's disks (not the clones vmkit made), write the source's serial.log, and take the
    source's TAPs and sockets.
    """
    cfg = copy.deepcopy(saved)

    def same_count(key: str, wanted: int, what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = cfg.get(key) or []
        if len(items) != wanted:
            raise VMFailed(
                f"the snapshot's config.json has {len(items)} {what}, the VM spec {wanted}: "
                "the snapshot does not belong to this spec"
            )
        return items

    cfg["serial"] = {**(cfg.get("serial") or {}), "mode": "File", "file": str(ctx.serial_log)}
    for item, disk in zip(same_count("disks", len(spec.disks), "disks"), spec.disks, strict=True):
        item["path"] = str(disk.file)
    nets = same_count("net", len(spec.networks), "NICs")
    for i, (item, net) in enumerate(zip(nets, spec.networks, strict=True)):
        # Named, CH would open (or make) the TAP in its own namespace: vm.restore gets the
        # TAP's fd instead (net_fds, see complete_restore), which replaces the saved `fds`;
        # without an `fds` entry CH would make a TAP of its own (vmtap0, host namespace)
        item["fds"] = [-1]
        item.pop("tap", None)
        item["mac"] = nic_mac(spec.name, i, net.mac)
    sockets = extra_sockets(spec, ctx)
    for i, item in enumerate(same_count("fs", len(spec.shares), "shares")):
        item["socket"] = str(sockets[f"fs{i}"])
    if cfg.get("vsock") and "vsock" in sockets:
        cfg["vsock"]["socket"] = str(sockets["vsock"])
    return cfg


def read_events(path: Path) -> list[dict[str, Any]]:
    """The event monitor's events, in order. CH writes each as pretty-printed JSON followed
    by a blank line; a half-written last event (the VMM died mid-write) is skipped."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    decoder = json.JSONDecoder()
    events: list[dict[str, Any]] = []
    pos = 0
    while (start := text.find("{", pos)) != -1:
        try:
            obj, pos = decoder.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        if isinstance(obj, dict) and "source" in obj and "event" in obj:
            events.append(obj)
    return events


@register
class CloudHypervisorDriver(Driver):
    name = "cloud-hypervisor"
    control_class: ClassVar[type[Control]]
    memory_restore_modes: ClassVar[tuple[str, ...]] = ("copy", "ondemand")
    features = Capabilities(
        boot_linux=True,
        guest_exec=True,  # vmkit ssh/exec: hybrid vsock (vsock_cid), or a TAP
        guest_copy=True,
        boot_efi=True,  # payload.firmware: CLOUDHV.fd or hypervisor-fw (not packaged here)
        disk_raw=True,
        disk_qcow2=True,
        disk_clone=True,
        cloud_init=True,
        net_none=True,
        net_tap=True,
        shares=True,
        rng=True,
        balloon=True,
        graceful_stop=True,
        kill=True,
        readiness=True,
        readopt=True,
        crash_detection=True,
        publish=True,  # TCP on TAP NICs, through vmkit's relay (net/portfwd)
    )
    not_yet_run_on: ClassVar[str | None] = "a host with Cloud Hypervisor and working KVM"
    vmm_tested: ClassVar[str | None] = (
        "VMM-tested on real Cloud Hypervisor; guest not booted (host KVM cannot run one)"
    )
    serial_follows_migration: ClassVar[bool] = True  # the target gets the source's config
    socket_roles: ClassVar[dict[str, str]] = {"api": "api"}
    binary_names = ("cloud-hypervisor",)
    binary_env: ClassVar[str | None] = "VMKIT_CLOUD_HYPERVISOR"
    install_hint: ClassVar[str] = (
        "install Cloud Hypervisor: it is not packaged in Debian 12; download the static "
        "binary from https://github.com/cloud-hypervisor/cloud-hypervisor/releases onto PATH "
        "(it needs a usable /dev/kvm)"
    )

    @classmethod
    def kernel_support(cls, info: KernelInfo) -> dict[str, str]:
        from vmkit.storage.kernel import KernelFormat, arm64_decompressible

        if info.arch == "x86_64":
            ok = info.format in (KernelFormat.BZIMAGE, KernelFormat.ELF_PVH)
            why = "no: Cloud Hypervisor needs a PVH ELF or a bzImage"
            return {"cloud-hypervisor/x86_64": "yes" if ok else why}
        if info.format == KernelFormat.ARM64_IMAGE:
            return {"cloud-hypervisor/aarch64": "yes"}
        if arm64_decompressible(info):
            how = "yes, once unpacked with `vmkit kernel extract FILE Image`"
            return {"cloud-hypervisor/aarch64": how}
        return {"cloud-hypervisor/aarch64": "no: not an arm64 Image"}

    @classmethod
    def auto_usable(cls) -> bool:
        from vmkit.hostinfo import kvm_state

        return kvm_state().usable  # Linux with the binary on PATH: drivers.AUTO_PREREQ

    def check(self, spec: MachineSpec) -> None:
        from vmkit.spec import EfiBoot, MacosBoot

        if isinstance(spec.boot, MacosBoot):
            raise NotSupported("macOS guests run only on Apple silicon Macs: use driver: vfkit")
        self.check_rosetta(spec)
        if isinstance(spec.boot, EfiBoot):
            if not spec.disks:
                raise InvalidInput("boot.kind 'efi' needs a bootable disk image in disks")
            efi_firmware(spec)  # none found: say where to get it, before create
        if spec.accelerator in ("tcg", "hvf"):
            raise InvalidInput(
                f"accelerator {spec.accelerator!r}: Cloud Hypervisor runs only on KVM"
            )
        for i, net in enumerate(spec.networks):
            try:
                net_config(net, f"net{i}", "52:54:00:00:00:00")
            except NotSupported as exc:
                raise NotSupported(f"networks[{i}]: {exc}") from None
        for i, disk in enumerate(spec.disks):
            if disk.format == "qcow2" and disk.path is not None and disk.path.is_file():
                from vmkit.storage import disk as diskmod

                backing = diskmod.info(disk.path).backing_file
                if backing and not Path(backing).is_file():
                    raise InvalidInput(
                        f"disks[{i}]: {disk.path} is a qcow2 overlay of {backing}, which does "
                        "not exist; Cloud Hypervisor could not open it"
                    )
        if spec.hugepages:
            for field, size in (("memory", spec.memory), ("max_memory", spec.max_memory)):
                if size is not None and size % HUGEPAGE:
                    raise InvalidInput(
                        f"{field}: {size >> 20} MiB is not a whole number of 2 MiB huge pages "
                        "(hugepages: true); use an even number of MiB"
                    )

    def prepare(self, spec: MachineSpec, ctx: LaunchContext) -> None:
        from vmkit.spec import LinuxBoot
        from vmkit.storage.kernel import extract_vmlinux, has_pvh_note

        if spec.hugepages:  # this host's, right before launch (not at --dry-run)
            ch_facts.check_hugepages(spec.memory, spec.max_memory)
        if not isinstance(spec.boot, LinuxBoot):
            return
        target = kernel_for(spec.boot.kernel, ctx)
        if target == spec.boot.kernel:
            return
        vmlinux = extract_vmlinux(spec.boot.kernel.read_bytes())
        if not has_pvh_note(vmlinux):
            raise NotSupported(
                f"{spec.boot.kernel}: the vmlinux inside has no PVH entry note, so Cloud "
                "Hypervisor cannot boot it directly; use a kernel built with CONFIG_PVH=y"
            )
        tmp = target.with_name(".vmlinux.tmp")
        tmp.write_bytes(vmlinux)
        tmp.replace(target)

    def _argv(self, ctx: LaunchContext) -> list[str]:
        return [
            self.binary_or_name(),
            "--api-socket",
            "path=" + optstr.cloud_hypervisor("VMKIT_RUNTIME_DIR (sockets)", ctx.sockets["api"]),
            "--event-monitor",
            "path=" + optstr.cloud_hypervisor("VMKIT_HOME (the VM's folder)", ctx.events_log),
        ]

    def plan(self, spec: MachineSpec, ctx: LaunchContext) -> LaunchPlan:
        self.check(spec)
        return LaunchPlan(
            argv=self._argv(ctx),
            sockets={**ctx.sockets, **extra_sockets(spec, ctx)},
            accelerator="kvm",
            api_requests=[
                ApiRequest("PUT", "vm.create", vm_config(spec, ctx)),
                *net_requests(spec),
                ApiRequest("PUT", "vm.boot"),
            ],
            shares=share_servers(spec, ctx),
        )

    def exit_cause(self, ctx: LaunchContext) -> ExitCause | None:
        """From the event monitor. A guest poweroff, `vm.shutdown` and `vmm.shutdown` all end
        with vm:shutdown / vm:deleted / vmm:shutdown; only the events after the last boot,
        reboot or restore count (a reboot shuts the old VM down first)."""
        crash = ch_facts.crash_in_log(ctx.vm_dir / "vmm.log")
        if crash is not None:  # the events look like a poweroff; vmm.log says otherwise
            return ExitCause(False, crash)
        names = [f"{e['source']}:{e['event']}" for e in read_events(ctx.events_log)]
        starts = [i for i, n in enumerate(names) if n in _START_EVENTS]
        if starts:
            names = names[starts[-1] + 1 :]
        if any(n.endswith(":panic") for n in names):
            return ExitCause(False, "guest panic")
        final = [n for n in names if n in _FINAL_EVENTS]
        if final:
            return ExitCause(True, "guest shutdown" if "vm:shutdown" in final else "VMM shutdown")
        return None

    def plan_restore(
        self, spec: MachineSpec, ctx: LaunchContext, state_dir: Path, meta: dict[str, Any]
    ) -> RestorePlan:
        """A bare VMM, plus the `vm.restore` that `complete_restore` sends: from a folder in
        the new VM's dir holding the snapshot's config.json re-pointed at the new VM's disks,
        serial log, TAPs and sockets (see `restored_config`), next to links to the saved
        state and memory."""
        try:
            saved = json.loads((state_dir / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise VMFailed(f"snapshot in {state_dir} is damaged: config.json: {exc}") from None
        restore_dir = ctx.vm_dir / "restore"
        body: dict[str, Any] = {
            "source_url": f"file://{restore_dir}",
            "prefault": False,
            "resume": True,
        }
        if meta.get("memory_restore") == "ondemand":  # pages fault in from the snapshot
            body["memory_restore_mode"] = "OnDemand"
        files = [
            f for f in meta.get("files", ["state.json", "memory-ranges"]) if f != "config.json"
        ]
        # each NIC's TAP goes to vm.restore as an fd (see restored_config)
        meta = {
            **meta,
            "ch_taps": [
                {"id": f"net{i}", "tap": n.tap, "netns": n.netns, "bridge": n.bridge}
                for i, n in enumerate(spec.networks)
            ],
        }
        launch = LaunchPlan(
            argv=self._argv(ctx),
            sockets={**ctx.sockets, **extra_sockets(spec, ctx)},
            accelerator="kvm",
            api_requests=[ApiRequest("PUT", "vm.restore", body)],
            shares=share_servers(spec, ctx),
        )
        return RestorePlan(
            launch,
            state_dir,
            meta,
            files={
                restore_dir / "config.json": json.dumps(restored_config(saved, spec, ctx), indent=1)
            },
            links={restore_dir / f: state_dir / f for f in files},
            request=body,
        )

    def plan_incoming(self, spec: MachineSpec, ctx: LaunchContext, uri: str) -> LaunchPlan:
        """A bare VMM; the VM's config arrives with the migration, from the source."""
        ch_facts.refuse_qcow2_migration(list(spec.disks), self.binary_or_name())
        if spec.networks:
            raise NotSupported(
                "Cloud Hypervisor cannot live-migrate a VM with NICs on one host: the target "
                "would need the TAP the source still holds (and CH's migration takes no new "
                "TAP fds); stop the VM, or snapshot it and restore the copy"
            )
        return LaunchPlan(
            argv=self._argv(ctx),
            sockets={**ctx.sockets, **extra_sockets(spec, ctx)},
            accelerator="kvm",
            shares=share_servers(spec, ctx),
        )
