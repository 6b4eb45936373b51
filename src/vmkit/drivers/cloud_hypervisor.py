"""Cloud Hypervisor driver, API mode: the VMM starts with only `--api-socket` (and an event
monitor); the VM is described by a `vm.create` body and booted with `vm.boot`, so
`--dry-run` shows every request, and pause, snapshot/restore, hotplug and migration all go
through the same REST API. Stop presses the power button and only then escalates
(`vm.shutdown` + `vmm.shutdown`, SIGTERM, SIGKILL): CH treats SIGTERM as an immediate exit.

Contract-tested only: no cloud-hypervisor binary runs on the project's CI machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vmkit.drivers.base import Capabilities, Driver, ExitCause, LaunchContext, LaunchPlan
from vmkit.drivers.ch_api import CHClient, CHError
from vmkit.errors import InvalidInput, NotSupported
from vmkit.net.mac import stable_mac

if TYPE_CHECKING:
    from vmkit.spec import Disk, MachineSpec, Network

STATES = {"Created": "starting", "Running": "running", "Paused": "paused", "Shutdown": "stopping"}


def vm_config(spec: MachineSpec, ctx: LaunchContext) -> dict[str, Any]:
    """The `vm.create` body (VmConfig) for `spec`."""
    from vmkit.spec import LinuxBoot

    assert isinstance(spec.boot, LinuxBoot)
    payload: dict[str, Any] = {"kernel": str(kernel_for(spec.boot.kernel, ctx))}
    cmdline = spec.boot.cmdline
    if "console=" not in cmdline:
        cmdline = f"console=ttyS0 {cmdline}".strip()
    payload["cmdline"] = cmdline
    if spec.boot.initrd is not None:
        payload["initramfs"] = str(spec.boot.initrd)
    config: dict[str, Any] = {
        "payload": payload,
        "cpus": {"boot_vcpus": spec.cpus, "max_vcpus": spec.max_cpus or spec.cpus},
        # shared: needed by virtio-fs and by local (fd-passing) live migration
        "memory": {"size": spec.memory, "shared": True},
        "serial": {"mode": "File", "file": str(ctx.serial_log)},
        "console": {"mode": "Off"},
    }
    if spec.topology is not None:
        config["cpus"]["topology"] = spec.topology.model_dump()
    if spec.hugepages:
        config["memory"]["hugepages"] = True
    if spec.vsock_cid is not None:
        config["vsock"] = {
            "cid": spec.vsock_cid,
            "socket": str(ctx.sockets["api"].with_suffix(".vsock")),
            "id": "vsock0",
        }
    if spec.max_memory is not None and spec.max_memory > spec.memory:
        config["memory"]["hotplug_size"] = spec.max_memory - spec.memory
    if spec.disks:
        config["disks"] = [disk_config(d, f"disk{i}") for i, d in enumerate(spec.disks)]
    if spec.networks:
        config["net"] = [
            net_config(n, f"net{i}", n.mac or stable_mac(spec.name, i))
            for i, n in enumerate(spec.networks)
        ]
    if spec.rng:
        config["rng"] = {"src": "/dev/urandom"}
    if spec.balloon:
        config["balloon"] = {"size": 0, "deflate_on_oom": True}
    if spec.shares:
        config["fs"] = [
            {
                "tag": s.tag,
                "socket": str(ctx.sockets["api"].with_suffix(f".fs{i}")),
                "num_queues": 1,
                "queue_size": 1024,
                "id": f"fs{i}",
            }
            for i, s in enumerate(spec.shares)
        ]
    return config


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
    return {"tap": net.tap, "mac": mac, "id": device_id}


class CloudHypervisorDriver(Driver):
    name = "cloud-hypervisor"
    capabilities = Capabilities(
        boot_linux=True,
        disk_raw=True,
        disk_qcow2=True,
        disk_clone=True,
        cloud_init=True,
        net_none=True,
        net_tap=True,
        rng=True,
        balloon=True,
        graceful_stop=True,
        kill=True,
        readiness=True,
        readopt=True,
        crash_detection=True,
        pause=True,
        snapshot=True,
        hotplug_disk=True,
        hotplug_net=True,
        hotplug_share=True,
        migrate=True,
        reboot=True,
        resize=True,
        counters=True,
    )
    not_yet_run_on: ClassVar[str | None] = "a host with Cloud Hypervisor and working KVM"
    socket_roles: ClassVar[dict[str, str]] = {"api": "api"}
    binary_names = ("cloud-hypervisor",)
    binary_env: ClassVar[str | None] = "VMKIT_CLOUD_HYPERVISOR"
    install_hint: ClassVar[str] = (
        "install Cloud Hypervisor: it is not packaged in Debian 12; download the static "
        "binary from https://github.com/cloud-hypervisor/cloud-hypervisor/releases onto PATH "
        "(it needs a usable /dev/kvm)"
    )

    def check(self, spec: MachineSpec) -> None:
        from vmkit.spec import EfiBoot, MacosBoot

        if isinstance(spec.boot, MacosBoot):
            raise NotSupported("macOS guests run only on Apple silicon Macs: use driver: vfkit")
        if isinstance(spec.boot, EfiBoot):
            raise NotSupported("boot.kind 'efi' is not implemented for Cloud Hypervisor yet")
        if spec.accelerator in ("tcg", "hvf"):
            raise InvalidInput(
                f"accelerator {spec.accelerator!r}: Cloud Hypervisor runs only on KVM"
            )
        for i, net in enumerate(spec.networks):
            try:
                net_config(net, f"net{i}", "52:54:00:00:00:00")
            except NotSupported as exc:
                raise NotSupported(f"networks[{i}]: {exc}") from None
            if net.publish:
                raise NotSupported(
                    f"networks[{i}].publish: Cloud Hypervisor has no port forwarding"
                )
        for i, disk in enumerate(spec.disks):
            if disk.format == "qcow2" and disk.path is not None and disk.path.is_file():
                from vmkit.storage import disk as diskmod

                backing = diskmod.info(disk.path).backing_file
                if backing and not Path(backing).is_file():
                    raise InvalidInput(
                        f"disks[{i}]: {disk.path} is a qcow2 overlay of {backing}, which does "
                        "not exist; Cloud Hypervisor could not open it"
                    )

    def prepare(self, spec: MachineSpec, ctx: LaunchContext) -> None:
        from vmkit.spec import LinuxBoot
        from vmkit.storage.kernel import extract_vmlinux, has_pvh_note

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
            f"path={ctx.sockets['api']}",
            "--event-monitor",
            f"path={ctx.events_log}",
        ]

    def plan(self, spec: MachineSpec, ctx: LaunchContext) -> LaunchPlan:
        self.check(spec)
        return LaunchPlan(
            argv=self._argv(ctx),
            sockets=dict(ctx.sockets),
            accelerator="kvm",
            api_requests=[
                {"method": "PUT", "endpoint": "vm.create", "body": vm_config(spec, ctx)},
                {"method": "PUT", "endpoint": "vm.boot", "body": None},
            ],
        )

    def after_launch(self, sockets: dict[str, str], plan: LaunchPlan) -> None:
        api = CHClient(sockets["api"])
        for req in plan.api_requests:
            api.request(str(req["method"]), str(req["endpoint"]), req.get("body"))

    def _api(self, sockets: dict[str, str], timeout: float = 10.0) -> CHClient:
        return CHClient(sockets["api"], timeout)

    def control_state(self, sockets: dict[str, str], timeout: float = 2.0) -> str | None:
        api = self._api(sockets, timeout)
        try:
            info = api.get("vm.info")
        except CHError as exc:
            if exc.status is None:
                return None  # not answering
            try:  # the VMM answers but has no VM yet (between launch and vm.create)
                api.get("vmm.ping")
            except CHError:
                return None
            return "starting"
        return STATES.get(str(info.get("state")), "running")

    def request_powerdown(self, sockets: dict[str, str]) -> None:
        self._api(sockets).put("vm.power-button")

    def force_shutdown(self, sockets: dict[str, str]) -> str | None:
        api = self._api(sockets)
        try:
            api.put("vm.shutdown")
        finally:
            api.put("vmm.shutdown")
        return "vm.shutdown"

    def exit_cause(self, ctx: LaunchContext) -> ExitCause | None:
        """From the event monitor: a guest that powered off ends with a vm shutdown event."""
        try:
            text = ctx.events_log.read_text(errors="replace")
        except FileNotFoundError:
            return None
        events = []
        for chunk in text.replace("}\n{", "}\x00{").split("\x00"):
            try:
                events.append(json.loads(chunk))
            except ValueError:
                continue
        names = [f"{e.get('source')}:{e.get('event')}" for e in events if isinstance(e, dict)]
        if "vm:shutdown" in names or "vmm:shutdown" in names:
            return ExitCause(True, "guest shutdown" if "vm:shutdown" in names else "VMM shutdown")
        if any(n.endswith(":panic") for n in names):
            return ExitCause(False, "guest panic")
        return None

    def pause(self, sockets: dict[str, str]) -> None:
        self._api(sockets).put("vm.pause")

    def resume(self, sockets: dict[str, str]) -> None:
        self._api(sockets).put("vm.resume")

    def reboot(self, sockets: dict[str, str]) -> None:
        self._api(sockets).put("vm.reboot")

    def save_state(self, sockets: dict[str, str], state_dir: Path) -> dict[str, Any]:
        """vm.snapshot writes config.json, state.json and the memory ranges into the dir."""
        info = self._api(sockets).get("vm.info")
        if info.get("config", {}).get("fs"):
            raise NotSupported("Cloud Hypervisor cannot snapshot a VM with virtio-fs attached")
        self._api(sockets, 600.0).put("vm.snapshot", {"destination_url": f"file://{state_dir}"})
        files = sorted(p.name for p in state_dir.iterdir())
        size = sum((state_dir / f).stat().st_size for f in files)
        return {"files": files, "state_file": "state.json", "state_bytes": size}

    def plan_restore(
        self, spec: MachineSpec, ctx: LaunchContext, state_dir: Path, meta: dict[str, Any]
    ) -> LaunchPlan:
        return LaunchPlan(argv=self._argv(ctx), sockets=dict(ctx.sockets), accelerator="kvm")

    def complete_restore(
        self, sockets: dict[str, str], state_dir: Path, meta: dict[str, Any], timeout: float
    ) -> None:
        api = self._api(sockets, timeout)
        body: dict[str, Any] = {"source_url": f"file://{state_dir}", "prefault": False}
        if meta.get("memory_restore") == "ondemand":  # pages fault in from the snapshot
            body["memory_restore_mode"] = "OnDemand"
        api.put("vm.restore", body)
        api.put("vm.resume")

    def attach_disk(self, sockets: dict[str, str], disk: Disk, device_id: str) -> None:
        self._api(sockets).put("vm.add-disk", disk_config(disk, device_id))

    def detach_disk(self, sockets: dict[str, str], device_id: str) -> None:
        self._api(sockets).put("vm.remove-device", {"id": device_id})

    def attach_net(self, sockets: dict[str, str], net: Network, device_id: str, mac: str) -> None:
        self._api(sockets).put("vm.add-net", net_config(net, device_id, mac))

    def detach_net(self, sockets: dict[str, str], device_id: str) -> None:
        self._api(sockets).put("vm.remove-device", {"id": device_id})

    def resize(self, sockets: dict[str, str], cpus: int | None, memory: int | None) -> None:
        body: dict[str, Any] = {}
        if cpus is not None:
            body["desired_vcpus"] = cpus
        if memory is not None:
            body["desired_ram"] = memory
        self._api(sockets).put("vm.resize", body)

    def counters(self, sockets: dict[str, str]) -> dict[str, Any]:
        data: dict[str, Any] = self._api(sockets).get("vm.counters") or {}
        return data

    def attach_share(
        self, sockets: dict[str, str], tag: str, socket_path: str, device_id: str
    ) -> None:
        body = {
            "tag": tag,
            "socket": socket_path,
            "num_queues": 1,
            "queue_size": 1024,
            "id": device_id,
        }
        self._api(sockets).put("vm.add-fs", body)

    def detach_share(self, sockets: dict[str, str], device_id: str) -> None:
        self._api(sockets).put("vm.remove-device", {"id": device_id})

    def plan_incoming(self, spec: MachineSpec, ctx: LaunchContext, uri: str) -> LaunchPlan:
        return LaunchPlan(argv=self._argv(ctx), sockets=dict(ctx.sockets), accelerator="kvm")

    def start_incoming(self, sockets: dict[str, str], uri: str) -> None:
        # Blocks in CH until the migration arrives, so it is sent without waiting for it.
        import threading

        threading.Thread(
            target=lambda: self._api(sockets, 600.0).put(
                "vm.receive-migration", {"receiver_url": uri}
            ),
            daemon=True,
        ).start()

    def send_migration(self, sockets: dict[str, str], uri: str, timeout: float) -> None:
        self._api(sockets, timeout).put(
            "vm.send-migration", {"destination_url": uri, "local": True}
        )
