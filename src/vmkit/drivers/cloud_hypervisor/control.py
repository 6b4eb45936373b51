"""The running VMM's Control for the cloud_hypervisor driver (see driver.py)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit.drivers import ch_facts
from vmkit.drivers.base import (
    Control,
    LaunchPlan,
    RestorePlan,
    TapRef,
)
from vmkit.drivers.ch_api import CHClient, CHError
from vmkit.errors import InvalidInput, NotSupported, VMFailed, VMStateError

if TYPE_CHECKING:
    from vmkit.spec import Disk, Network
from vmkit.drivers.cloud_hypervisor.driver import (
    HOTPLUG_BLOCK,
    STATES,
    disk_config,
    net_config,
    read_events,
)


class CloudHypervisorControl(Control):
    def after_launch(self, plan: LaunchPlan) -> None:
        api = self._api()
        for req in plan.api_requests:
            if req.tap is not None:
                missing = "it was there at launch and was removed while the VM was starting"
                self._put_with_tap(api, req.endpoint, req.body, req.tap, missing)
            else:
                api.request(req.method, req.endpoint, req.body)

    @staticmethod
    def _put_with_tap(
        api: CHClient, endpoint: str, body: dict[str, Any], tap: TapRef, missing: str
    ) -> Any:
        """PUT `body` with an fd of the existing TAP `tap` names (`missing`: why it must)."""
        from vmkit.net import tap as taps

        fd = taps.open_existing_tap(tap.tap, tap.netns, tap.bridge, missing)
        try:
            return api.put_with_fds(endpoint, body, [fd])
        finally:
            os.close(fd)

    def _api(self, timeout: float = 10.0) -> CHClient:
        return CHClient(self.sockets["api"], timeout)

    def state(self, timeout: float = 2.0) -> str | None:
        api = self._api(timeout)
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

    def power_button(self) -> None:
        self._api().put("vm.power-button")

    def hard_stop(self) -> str | None:
        """`vm.shutdown` stops the vCPUs whatever the guest does; the VMM stays until
        `vmm.shutdown`. Returns the step that ended the guest."""
        api = self._api()
        step = "vm.shutdown"
        try:
            api.put("vm.shutdown")
        except CHError as exc:
            if exc.status is None:
                raise  # not answering at all: SIGTERM is next
            step = "vmm.shutdown"  # no running VM to stop (e.g. 405); the VMM must still go
        try:
            api.put("vmm.shutdown")
        except CHError as exc:
            if exc.status is not None:
                raise
            # CH exits right after answering: a dropped connection means it is going
        return step

    def pause(self) -> None:
        self._api().put("vm.pause")

    def resume(self) -> None:
        api = self._api()
        if api.get("vm.info").get("state") == "Running":
            return  # CH answers 500 InvalidStateTransition(Running, Running); pause is idempotent
        api.put("vm.resume")

    def reboot(self) -> None:
        self._api().put("vm.reboot")

    def save_state(self, state_dir: Path) -> dict[str, Any]:
        """vm.snapshot writes config.json, state.json and the memory ranges into the dir."""
        info = self._api().get("vm.info")
        if info.get("config", {}).get("fs"):
            raise NotSupported("Cloud Hypervisor cannot snapshot a VM with virtio-fs attached")
        self._api(600.0).put("vm.snapshot", {"destination_url": f"file://{state_dir}"})
        files = sorted(p.name for p in state_dir.iterdir())
        missing = {"config.json", "state.json"} - set(files)
        if missing:
            raise VMFailed(f"vm.snapshot left no {', '.join(sorted(missing))} in {state_dir}")
        return {
            "files": files,
            "state_file": "state.json",  # restore checks its size against state_bytes
            "state_bytes": (state_dir / "state.json").stat().st_size,
            "bytes": sum((state_dir / f).stat().st_size for f in files),
        }

    def complete_restore(self, plan: RestorePlan, timeout: float) -> None:
        """`vm.restore` from the folder the plan staged (config.json + links to the state)."""
        api = self._api(timeout)
        assert plan.request is not None
        self._restore_with_taps(api, plan.request, plan.meta.get("ch_taps") or [])
        # `resume` is recent: a CH that ignores it leaves the restored VM paused
        if api.get("vm.info").get("state") == "Paused":
            api.put("vm.resume")

    @staticmethod
    def _restore_with_taps(api: CHClient, body: dict[str, Any], taps: list[dict[str, Any]]) -> None:
        """vm.restore, with each NIC's TAP passed as an fd (`net_fds`, SCM_RIGHTS) opened
        where it lives (its netns), as for vm.add-net."""
        if not taps:
            api.put("vm.restore", body)
            return
        from vmkit.net import tap as tapmod

        fds: list[int] = []
        try:
            for t in taps:
                why = "it was there at launch and was removed while the VM was restoring"
                fds.append(tapmod.open_existing_tap(t["tap"], t["netns"], t["bridge"], why))
            net_fds = [{"id": t["id"], "num_fds": 1} for t in taps]
            api.put_with_fds("vm.restore", {**body, "net_fds": net_fds}, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def device_present(self, device_id: str) -> bool:
        """CH keeps a removed device (and its id) until the guest acknowledges the eject."""
        return device_id in ch_facts.device_ids(self._api().get("vm.info"))

    def attach_disk(self, disk: Disk, device_id: str) -> None:
        self._api().put("vm.add-disk", disk_config(disk, device_id))

    def detach_disk(self, device_id: str) -> None:
        self._api().put("vm.remove-device", {"id": device_id})

    def attach_net(
        self,
        net: Network,
        device_id: str,
        mac: str,
        switch: tuple[Path, Path] | None = None,
    ) -> None:
        body = net_config(net, device_id, mac)
        tap = TapRef(body.pop("tap"), net.netns, net.bridge)
        missing = "create it first (a hot-plugged NIC uses an existing TAP)"
        self._put_with_tap(self._api(), "vm.add-net", body, tap, missing)

    def detach_net(self, device_id: str) -> None:
        self._api().put("vm.remove-device", {"id": device_id})

    def resize(self, cpus: int | None, memory: int | None) -> None:
        body: dict[str, Any] = {}
        if cpus is not None:
            body["desired_vcpus"] = cpus
        api = self._api()
        if memory is not None:
            body["desired_ram"] = memory
            boot = int(api.get("vm.info")["config"]["memory"]["size"])
            if (memory - boot) % HOTPLUG_BLOCK:
                raise InvalidInput(
                    f"memory {memory >> 20} MiB: Cloud Hypervisor adds memory in "
                    f"{HOTPLUG_BLOCK >> 20} MiB blocks (ACPI hotplug) to the {boot >> 20} MiB "
                    f"it booted with; ask for {boot >> 20} MiB plus a multiple of "
                    f"{HOTPLUG_BLOCK >> 20} MiB"
                )
        try:
            api.put("vm.resize", body)
        except CHError as exc:
            if exc.status == 429:
                raise VMStateError(
                    "Cloud Hypervisor is still waiting for the guest to release vCPUs from "
                    "an earlier resize (HTTP 429); retry once the guest has taken them "
                    "offline"
                ) from None
            raise

    def counters(self) -> dict[str, Any]:
        data: dict[str, Any] = self._api().get("vm.counters") or {}
        return data

    def attach_share(self, tag: str, socket_path: str, device_id: str) -> None:
        body = {
            "tag": tag,
            "socket": socket_path,
            "num_queues": 1,
            "queue_size": 1024,
            "id": device_id,
        }
        # virtiofsd.start returned once it listens: with no backend listening, vm.add-fs
        # would block CH for ~60 s
        self._api().put("vm.add-fs", body)

    def detach_share(self, device_id: str) -> None:
        self._api().put("vm.remove-device", {"id": device_id})

    def start_incoming(self, uri: str) -> None:
        # Blocks in CH until the migration arrives, so it is sent without waiting for it.
        import threading

        def receive() -> None:
            # its failure shows in the outcome vmkit waits for (migration_wait), not here
            with contextlib.suppress(CHError):
                self._api(600.0).put("vm.receive-migration", {"receiver_url": uri})

        threading.Thread(target=receive, daemon=True).start()

    def send_migration(self, uri: str, timeout: float) -> None:
        """Starts CH's migration worker: the 204 is not completion (see migration_result)."""
        self._api(timeout).put("vm.send-migration", {"destination_url": uri, "local": True})

    def migration_result(self) -> str | None:
        # the event monitor's file (LaunchContext.events_log) in this VM's folder
        return ch_facts.migration_result(read_events(self.vm_dir / "vmm-events.log"))
