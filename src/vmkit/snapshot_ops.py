"""Snapshot, restore and live migration: the verbs that move a running guest between VMMs.

Driver-neutral: the driver saves/loads RAM + device state (Driver.save_state, plan_restore,
complete_restore, plan_incoming, send_migration); this module keeps disks consistent with
that state (cloned while the guest is paused), records snapshots, and makes sure a failed
restore or migration leaves no half-created VM behind.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit import faults, migration_wait, snapshot_guard
from vmkit.drivers.abilities import (
    GuestChannel,
    IncomingPlanner,
    Migratable,
    Pausable,
    RamSharer,
    RestorePlanner,
    Snapshottable,
    ability,
)
from vmkit.errors import InvalidInput, VMFailed, VmkitError, VMStateError
from vmkit.model import RuntimeRecord, State
from vmkit.process import ProcessRef, wait_for_path
from vmkit.snapshots import Snapshot, SnapshotStore, dir_bytes
from vmkit.storage.clone import clone_file

if TYPE_CHECKING:
    from vmkit.machine import Host, Machine
    from vmkit.spec import MachineSpec

RESTORE_TIMEOUT = 120.0


def _refuse_hotplugged(machine: Machine, rt: RuntimeRecord, verb: str) -> None:
    if machine.spec_json.get("shares"):
        raise VMStateError(
            f"cannot {verb} VM {machine.name!r}: it has virtio-fs shares, whose state lives "
            "in the virtiofsd sidecar and cannot be saved or moved (a QEMU/virtiofsd "
            "limitation); stop the VM, or run it without shares"
        )
    devices = rt.hotplug
    if devices:
        raise VMStateError(
            f"cannot {verb} VM {machine.name!r} while it has hot-plugged devices "
            f"({', '.join(sorted(devices))}): the new VMM must be started with the same "
            f"devices; unplug them first (`vmkit disk rm` / `vmkit net rm`)"
        )


def create_snapshot(machine: Machine, name: str) -> Snapshot:
    machine.require(Snapshottable, "snapshot")
    driver = machine.driver
    snaps = SnapshotStore(machine.store.home)
    snaps.path(name)  # a bad name is bad input, whatever state the VM is in
    t0 = time.monotonic()
    with machine.locked():
        saver, rt = machine.live_control(Snapshottable, "snapshot")
        pauser = ability(machine.control(rt), Pausable)
        _refuse_hotplugged(machine, rt, "snapshot")
        spec = machine.spec
        staging = snaps.begin(name)
        was_paused = machine.status().state == State.PAUSED
        try:
            with contextlib.ExitStack() as guard:
                if not was_paused and pauser is not None:
                    guard.enter_context(snapshot_guard.paused(machine))
                    pauser.pause()
                    guard.callback(pauser.resume)
                    faults.point("snapshot:paused")
                t_save = time.monotonic()
                state = saver.save_state(staging)
                save_s = time.monotonic() - t_save
                disks = _clone_disks(spec, staging)
                files = _copy_state_files(machine.dir, staging / "files", driver.vm_state_files)
            accel = str(rt.accelerator or "tcg")
            state, shared_note = _share_ram(driver, spec, staging, state, disks, accel)
            record = {
                "format": 1,
                "name": name,
                "source": machine.name,
                "driver": driver.name,
                "created_at": time.time(),
                "was_paused": was_paused,  # and stays so; else the guest kept running
                "spec": spec.to_json(),
                "macs": _effective_macs(spec),
                "ready": None if rt.ready is None else rt.ready.to_json(),
                "accelerator": rt.accelerator,
                "state": state,
                "shared_ram": shared_note,
                "disks": disks,
                "files": files,
                "devices": {
                    "disks": len(spec.disks),
                    "networks": len(spec.networks),
                    "rng": spec.rng,
                    "balloon": spec.balloon,
                },
                "bytes": dir_bytes(staging),
                "seconds": {
                    "save_state": round(save_s, 3),
                    "total": round(time.monotonic() - t0, 3),
                },
            }
            return snaps.commit(name, staging, record)
        except BaseException:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
            raise


def _share_ram(
    driver: Any,
    spec: MachineSpec,
    staging: Path,
    state: dict[str, Any],
    disks: list[dict[str, Any]],
    accel: str,
) -> tuple[dict[str, Any], str]:
    """After the source runs again: the driver's copy-on-write RAM for restored copies, if
    it can (else the snapshot stays as saved, and the record says why)."""
    if not isinstance(driver, RamSharer):
        return state, f"the {driver.name} driver keeps RAM in its state file"
    try:
        return driver.share_ram(spec, staging, state, disks, accel), "yes"
    except (VmkitError, OSError) as exc:
        return state, str(exc)


def _copy_state_files(src_dir: Path, dst_dir: Path, names: tuple[str, ...]) -> list[str]:
    """Copy the driver's machine-state files that exist (private, like the VM dir)."""
    import shutil  # here: only a restore copies them

    copied = []
    for name in names:
        if (src_dir / name).is_file():
            dst_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copyfile(src_dir / name, dst_dir / name)
            (dst_dir / name).chmod(0o600)
            copied.append(name)
    return copied


def _clone_disks(spec: MachineSpec, staging: Path) -> list[dict[str, Any]]:
    """Writable disks are cloned (CoW where the filesystem can); read-only ones referenced."""
    out: list[dict[str, Any]] = []
    disk_dir = staging / "disks"
    for i, disk in enumerate(spec.disks):
        if disk.readonly:
            out.append({"index": i, "path": str(disk.file), "format": disk.format, "shared": True})
            continue
        disk_dir.mkdir(mode=0o700, exist_ok=True)
        target = disk_dir / f"disk{i}.{disk.format}"
        result = clone_file(disk.file, target)
        out.append(
            {
                "index": i,
                "file": str(target.relative_to(staging)),
                "format": disk.format,
                "shared": False,
                "clone": result.to_json(),
            }
        )
    return out


def _effective_macs(spec: MachineSpec) -> list[str]:
    from vmkit.net.mac import nic_mac

    return [nic_mac(spec.name, i, net.mac) for i, net in enumerate(spec.networks)]


def _free_name(host: Host, base: str) -> str:
    from vmkit.names import validate_name

    n = 1
    while True:
        candidate = f"{base}-{n}"[:63]
        validate_name(candidate)
        if not host.store.exists(candidate):
            return candidate
        n += 1


def restore(
    host: Host,
    snapshot: str,
    name: str | None = None,
    driver_name: str | None = None,
    wait: bool = True,
    timeout: float | None = None,
    memory_restore: str = "copy",
) -> Machine:
    """A new VM from `snapshot`, with its own disk clones and fresh MACs.

    The VM either comes up (ready, when `wait`) or is removed again: a failed restore
    leaves nothing behind.
    """
    from vmkit.drivers import get_driver
    from vmkit.spec import spec_from_dict

    snap = SnapshotStore(host.store.home).get(snapshot)
    if driver_name is not None and driver_name not in ("auto", snap.driver):
        raise InvalidInput(
            f"snapshot {snap.name!r} was taken with the {snap.driver} driver; the "
            f"{driver_name} driver cannot load its state (restore it with --driver "
            f"{snap.driver})"
        )
    driver = get_driver(snap.driver, snap.record["spec"].get("arch"))
    planner = driver if isinstance(driver, RestorePlanner) else None
    if planner is None or not driver.capabilities.snapshot:
        raise InvalidInput(f"the {driver.name} driver cannot restore snapshots")
    _verify_snapshot_files(snap)
    if memory_restore not in ("copy", "ondemand"):
        raise InvalidInput(f"memory restore {memory_restore!r}: use copy or ondemand")
    if memory_restore not in driver.memory_restore_modes:
        raise InvalidInput(
            f"--memory-restore {memory_restore} is not something the {driver.name} driver "
            f"can do (it can: {', '.join(driver.memory_restore_modes)}); "
            "ondemand is a Cloud Hypervisor feature"
        )
    state = {**snap.state, "memory_restore": memory_restore}
    new_name = name or _free_name(host, snap.name)

    spec_json = dict(snap.record["spec"])
    spec_json["name"] = new_name
    spec_json["networks"] = [{**net, "mac": None} for net in spec_json.get("networks", [])]
    vm_dir = host.store.vm_dir(new_name)
    for d in snap.record["disks"]:
        if not d["shared"]:
            spec_json["disks"][d["index"]]["path"] = str(vm_dir / f"disk{d['index']}.{d['format']}")
    if spec_json.get("vsock_cid") is not None and driver.vsock_cids_host_wide:
        spec_json["vsock_cid"] = free_vsock_cid(host, int(spec_json["vsock_cid"]))
    spec_json = spec_from_dict(spec_json, check_files=False).to_json()
    # fresh MACs; `creating` until its disks are cloned and its VMM runs (gc rolls back a
    # restore cut off before that)
    machine = host.register(spec_json, driver.name, creating=True, restored_from=snap.name)
    spec = machine.spec
    try:
        for d in snap.record["disks"]:
            if not d["shared"]:
                clone_file(snap.dir / d["file"], vm_dir / f"disk{d['index']}.{d['format']}")
        _copy_state_files(snap.dir / "files", vm_dir, tuple(snap.record.get("files", [])))
        accel = str(snap.record.get("accelerator") or "tcg")
        plan = planner.plan_restore(spec, machine.context(accel), snap.dir, state)
        with machine.locked():
            proc = machine.launch(plan.launch, restored_from=snap.name)
            host.finish_create(machine)
        faults.point("restore:launched")
        ctl = machine.wait_control(proc)
        loader = ability(ctl, Snapshottable)
        assert loader is not None  # driver.capabilities.snapshot
        try:
            plan.stage()
            loader.complete_restore(plan, timeout or RESTORE_TIMEOUT)
        except VmkitError as exc:
            proc.wait_gone(2)
            raise VMFailed(
                machine.failure_message(
                    machine.status(), f"restoring snapshot {snap.name!r} failed: {exc}"
                )
            ) from None
        answered = False
        if (channel := ability(ctl, GuestChannel)) is not None:
            from vmkit.access.boot import runs_vmkit_agent

            addr = channel.announce_readiness(spec.networks, runs_vmkit_agent(spec))
            if answered := addr is not None:  # the agent's answer is its readiness
                machine.announced_readiness(None if addr == "-" else addr)
        elif snap.record.get("ready") is not None:
            # No channel to make the guest say it again (Cloud Hypervisor): it said so before
            # the snapshot and resumes exactly there, so that readiness carries over, marked.
            machine.inherit_readiness(snap.record["ready"], snap.name)
        if wait and not answered:
            machine.wait_ready(timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            machine.delete(force=True)
        raise
    return machine


def free_vsock_cid(host: Host, wanted: int) -> int:
    """`wanted` unless a VM of this store has it (the snapshot's source usually still runs
    with it), else a random unused CID: two guests cannot share one in the host's vsock
    space. The guest learns its new CID from the transport reset QEMU sends after a load."""
    import secrets

    used = set()
    for machine in host.machines():
        with contextlib.suppress(VmkitError, ValueError, KeyError, TypeError):
            if (cid := machine.spec_json.get("vsock_cid")) is not None:
                used.add(int(cid))
    cid = wanted
    while cid in used:
        cid = 1024 + secrets.randbelow(1 << 30)  # clear of hand-picked small CIDs
    return cid


def _verify_snapshot_files(snap: Snapshot) -> None:
    """Cheap checks before anything is created: every file there, state file size intact."""
    state_file = snap.dir / str(snap.state.get("state_file", ""))
    expected = snap.state.get("state_bytes")
    if not state_file.is_file():
        raise VMFailed(f"snapshot {snap.name!r} is damaged: its state file {state_file} is missing")
    actual = state_file.stat().st_size
    if expected is not None and actual != expected:
        raise VMFailed(
            f"snapshot {snap.name!r} is damaged: its state file {state_file} has {actual} bytes, "
            f"{expected} were saved (truncated or overwritten); take a new snapshot and "
            f"remove this one with `vmkit snapshot rm {snap.name}`"
        )
    if ram := snap.state.get("shared_ram"):
        ram_file = snap.dir / str(ram["file"])
        if not ram_file.is_file():
            raise VMFailed(
                f"snapshot {snap.name!r} is damaged: its RAM file {ram_file} is missing; take "
                f"a new snapshot and remove this one with `vmkit snapshot rm {snap.name}`"
            )
        if (size := ram_file.stat().st_size) != ram["bytes"]:
            raise VMFailed(
                f"snapshot {snap.name!r} is damaged: its RAM file {ram_file} has {size} bytes, "
                f"the guest has {ram['bytes']} (truncated or overwritten); take a new "
                f"snapshot and remove this one with `vmkit snapshot rm {snap.name}`"
            )
    for d in snap.record["disks"]:
        path = Path(d["path"]) if d["shared"] else snap.dir / d["file"]
        if not path.is_file():
            raise VMFailed(f"snapshot {snap.name!r} is damaged: disk {path} is missing")
    for name in snap.record.get("files", []):
        if not (snap.dir / "files" / name).is_file():
            raise VMFailed(f"snapshot {snap.name!r} is damaged: its {name} is missing")


def migrate(machine: Machine, to: str, timeout: float) -> Machine:
    """Live-migrate `machine` into a new VM `to` on this host; `machine` ends stopped."""
    from vmkit.spec import spec_from_dict

    machine.require(Migratable, "live-migrate")
    driver = machine.driver
    assert isinstance(driver, IncomingPlanner)  # capabilities.migrate needs both sides
    host = machine.host
    with machine.locked():
        sender, rt = machine.live_control(Migratable, "migrate", (State.RUNNING, State.READY))
        _refuse_hotplugged(machine, rt, "migrate")
        if any(n.get("publish") for n in machine.spec_json.get("networks", [])):
            raise VMStateError(
                f"cannot migrate VM {machine.name!r} on this host while it publishes ports: "
                "the new VMM cannot bind the host ports the old one holds"
            )
        src_spec = machine.spec
        spec_json = src_spec.to_json()
        spec_json["name"] = to
        # Same guest, same NICs: pin the MACs the source has.
        macs = _effective_macs(src_spec)
        spec_json["networks"] = [
            {**net, "mac": macs[i]} for i, net in enumerate(spec_json.get("networks", []))
        ]
        spec = spec_from_dict(spec_json, check_files=False)
        # Disks the source owns (in its VM dir) move with the guest once it has moved.
        owned = [
            (i, d.file, host.store.vm_dir(to) / d.file.relative_to(machine.dir))
            for i, d in enumerate(src_spec.disks)
            if d.file.is_relative_to(machine.dir)
        ]
        record_json = spec.to_json()
        for i, _src, dst in owned:
            record_json["disks"][i]["path"] = str(dst)
        target = host.register(record_json, driver.name, True, migrated_from=machine.name)
        handed_over = False
        src_proc = machine.process(rt)
        try:
            uri_path = host.store.socket_path(to, "mig")
            uri_path.unlink(missing_ok=True)
            uri = f"unix:{uri_path}"
            accel = str(rt.accelerator or "tcg")
            _copy_state_files(machine.dir, target.dir, driver.vm_state_files)
            plan = driver.plan_incoming(spec, target.context(accel), uri)
            ready = None if rt.ready is None else rt.ready.to_json()
            with target.locked():
                proc = target.launch(plan, migrated_from=machine.name, ready=ready)
            faults.point("migrate:target")
            target_ctl = target.wait_control(proc)
            receiver = ability(target_ctl, Migratable)
            assert receiver is not None
            receiver.start_incoming(uri)
            _wait_listening(uri_path, proc)
            sender.send_migration(uri, timeout)
            # Nothing of the source moves until the target is confirmed running.
            migration_wait.await_target(
                machine, target, machine.control(rt), target_ctl, src_proc, proc, timeout
            )
            handed_over = True
            if src_proc is not None:
                src_proc.wait_gone(10)
                machine.mark_ended(rt, src_proc, "migrate", f"migrated to {to}")
            uri_path.unlink(missing_ok=True)
            for _i, src, dst in owned:  # the target VMM keeps its open fds across a rename
                dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                src.rename(dst)
            migration_wait.move_serial(machine, target, driver)
        except BaseException:
            if not handed_over:  # the guest still lives in the source: drop the target
                with contextlib.suppress(Exception):
                    target.delete(force=True)
                migration_wait.recover_source(machine.control(rt), src_proc)
            raise
    return target


def _wait_listening(path: Path, proc: ProcessRef, limit: float = 30.0) -> None:
    if wait_for_path(proc, path, limit):
        return
    if proc.wait_gone(0):
        raise VMFailed(f"the migration target exited before listening on {path}")
    raise VMFailed(f"the migration target did not listen on {path} within {limit:g}s")
