"""Hot-plug and unplug of disks, NICs and shares on a running VM, recorded in runtime.json
(`hotplug`: device id -> what it is). Uses only Machine's public API."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit import hotplug, sidecars
from vmkit.drivers.abilities import DiskHotplug, NicHotplug, ShareHotplug
from vmkit.errors import InvalidInput, VmkitError
from vmkit.model import RuntimeRecord, SidecarRecord

if TYPE_CHECKING:
    from vmkit.machine.facade import Machine


def attach_disk(
    machine: Machine, path: Path, readonly: bool, fmt: str | None, force: bool = False
) -> dict[str, Any]:
    machine.require(DiskHotplug, "hot-plug disks")
    disk = hotplug.disk_from_path(path, readonly, fmt, force)
    with machine.locked():
        ctl, rt = machine.live_control(DiskHotplug, "hot-plug a disk into")
        devices = settled(machine, rt)
        hotplug.refuse_still_attached(devices, disk.file)
        device_id = hotplug.next_id(devices, "hd")
        ctl.attach_disk(disk, device_id)
        entry: dict[str, Any] = {
            "kind": "disk",
            "path": str(disk.file),
            "format": disk.format,
            "readonly": disk.readonly,
        }
        devices[device_id] = entry
        rt.hotplug = devices
        machine.save_runtime(rt)
    return {"id": device_id, **entry}


def attach_net(
    machine: Machine,
    mode: str,
    mac: str | None,
    tap: str | None,
    netns: str | None,
    bridge: str | None,
    switch: str | None,
) -> dict[str, Any]:
    from vmkit.net import switches
    from vmkit.net.mac import nic_mac

    machine.require(NicHotplug, "hot-plug NICs")
    net = hotplug.network(mode, mac, tap, netns, bridge, switch)
    with machine.locked():
        ctl, rt = machine.live_control(NicHotplug, "hot-plug a NIC into")
        devices = settled(machine, rt)
        device_id = hotplug.next_id(devices, "hn")
        mac = nic_mac(machine.name, 100 + int(device_id[2:]), net.mac)
        entry: dict[str, Any] = {"kind": "net", "mode": net.mode, "mac": mac}
        link = None
        if net.mode == "switch":
            assert net.switch is not None
            port = machine.store.socket_path(machine.name, device_id)
            info = switches.add_port(machine.store, net.switch, machine.name, str(port))
            link = (Path(info["socket"]), port)
            entry.update(switch=net.switch, port=str(port))
        try:
            ctl.attach_net(net, device_id, mac, link)
        except BaseException:
            if link is not None:
                drop_switch_port(machine, entry, devices)
            raise
        if net.mode == "tap":
            entry.update(tap=net.tap, netns=net.netns)
        devices[device_id] = entry
        rt.hotplug = devices
        machine.save_runtime(rt)
    return {"id": device_id, **entry}


def attach_share(machine: Machine, host_dir: Path, tag: str, readonly: bool) -> dict[str, Any]:
    from vmkit.spec import Share

    machine.require(ShareHotplug, "hot-plug shares")
    try:
        share = Share(host=host_dir.expanduser().absolute(), tag=tag, readonly=readonly)
    except ValueError as exc:
        raise InvalidInput(f"share: {exc}") from None
    if not share.host.is_dir():
        raise InvalidInput(f"share: {str(share.host)!r} is not a directory")
    with machine.locked():
        ctl, rt = machine.live_control(ShareHotplug, "hot-plug a share into")
        devices = settled(machine, rt)
        device_id = hotplug.next_id(devices, "hs")
        sock = machine.store.socket_path(machine.name, device_id)
        server = sidecars.Virtiofsd(share.to_json(), sock, machine.dir)
        helper = server.start()
        try:
            ctl.attach_share(tag, str(sock), device_id)
        except BaseException:
            sidecars.stop(helper)
            raise
        entry: dict[str, Any] = {"kind": "share", "tag": tag, "host": str(share.host)}
        entry["readonly"], entry["helper"] = readonly, helper.to_json()
        devices[device_id] = entry
        rt.hotplug = devices
        machine.save_runtime(rt)
    return {"id": device_id, **entry}


def detach(machine: Machine, device_id: str) -> dict[str, Any]:
    with machine.locked():
        rt = machine.live_runtime("unplug a device from")
        devices = settled(machine, rt)
        entry = devices.get(device_id)
        if entry is None:
            known = ", ".join(sorted(devices)) or "none"
            raise InvalidInput(
                f"VM {machine.name!r} has no hot-plugged device {device_id!r} (has: {known})"
            )
        if entry.get("pending_removal"):
            return {"id": device_id, **entry}  # asked before; the guest has not let go
        if entry["kind"] == "disk":
            disks, _ = machine.live_control(DiskHotplug, "unplug disks")
            disks.detach_disk(device_id)
        elif entry["kind"] == "share":
            shares, _ = machine.live_control(ShareHotplug, "unplug shares")
            shares.detach_share(device_id)
        else:
            nics, _ = machine.live_control(NicHotplug, "unplug NICs")
            nics.detach_net(device_id)
            if entry.get("switch"):
                del devices[device_id]
                drop_switch_port(machine, entry, devices)
        if machine.control(rt).device_present(device_id):
            entry = {**entry, "pending_removal": True}  # its id stays taken until it goes
            devices[device_id] = entry
        else:
            release(entry)  # a share's virtiofsd and socket
            devices.pop(device_id, None)
        rt.hotplug = devices
        machine.save_runtime(rt)
    return {"id": device_id, **entry}


def settled(machine: Machine, rt: RuntimeRecord) -> dict[str, Any]:
    """The VM's hot-plugged devices, less the removals its guest has acknowledged since
    (Cloud Hypervisor keeps a device until then)."""
    kept, gone = hotplug.settle(dict(rt.hotplug), machine.control(rt).device_present)
    for entry in gone:
        release(entry)
    return kept


def release(entry: dict[str, Any]) -> None:
    """What a removed device leaves on the host: a share's virtiofsd and its socket."""
    if entry.get("kind") == "share" and entry.get("helper"):
        sidecars.stop(SidecarRecord.from_json(entry["helper"]))


def drop_switch_port(machine: Machine, entry: dict[str, Any], others: dict[str, Any]) -> None:
    """A hot-plugged switch NIC is gone: its port leaves the switch's lease (and the
    lease goes when no other NIC of this VM is on that switch)."""
    from vmkit.net import switches

    name = str(entry["switch"])
    still = name in switches.names_of(machine.spec_json) or any(
        e.get("switch") == name for e in others.values()
    )
    with contextlib.suppress(VmkitError):
        switches.drop_port(machine.store, name, machine.name, str(entry["port"]), still)
    Path(entry["port"]).unlink(missing_ok=True)
