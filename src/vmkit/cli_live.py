"""CLI verbs on running VMs: pause, resume, reboot, snapshot, restore, disk/net hotplug, migrate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from vmkit.cli_common import READ_HELP, echo_json, host, table
from vmkit.cli_direct import restored_text
from vmkit.drivers import names as driver_names
from vmkit.errors import InvalidInput


def _state_line(st: Any) -> str:
    return f"{st.name}: {st.state}"


def _each(names: tuple[str, ...], verb: str, as_json: bool) -> None:
    h = host()
    out = [getattr(h.get(n), verb)() for n in names]
    if as_json:
        echo_json([st.to_json() for st in out])
    else:
        for st in out:
            click.echo(_state_line(st))


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def pause(names: tuple[str, ...], as_json: bool) -> None:
    """Freeze the guest's vCPUs; memory stays. `vmkit resume` continues."""
    _each(names, "pause", as_json)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def resume(names: tuple[str, ...], as_json: bool) -> None:
    """Continue a paused guest."""
    _each(names, "resume", as_json)


@click.command()
@click.argument("name")
@click.option("--wait/--no-wait", "wait_ready", default=False, help="Wait until ready again.")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def reboot(name: str, wait_ready: bool, as_json: bool) -> None:
    """Reset the guest (it boots again; readiness is awaited afresh)."""
    machine = host().get(name)
    st = machine.reboot()
    if wait_ready:
        st = machine.wait_ready()
    if as_json:
        echo_json(st.to_json())
    else:
        click.echo(_state_line(st))


# ---- snapshots -------------------------------------------------------------------------
@click.group(name="snapshot")
def snapshot_group() -> None:
    """Save a running VM (memory, devices, disks) and list or remove snapshots."""


@snapshot_group.command(name="create")
@click.argument("vm")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def snapshot_create(vm: str, name: str, as_json: bool) -> None:
    """Snapshot VM as NAME: pause, save RAM + device state, clone disks, resume."""
    snap = host().get(vm).snapshot(name)
    if as_json:
        echo_json(snap.summary())
    else:
        r = snap.record
        click.echo(
            f"snapshot {name} of {vm}: {_mib(r['bytes'])} on disk "
            f"(state {_mib(r['state'].get('state_bytes', 0))}), "
            f"{r['seconds']['total']:.2f}s; "
            + ("the VM stays paused" if r.get("was_paused") else "the VM kept running")
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@snapshot_group.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def snapshot_ls(as_json: bool) -> None:
    """List snapshots."""
    snaps = [s.summary() for s in host().snapshots.all()]
    if as_json:
        echo_json(snaps)
        return
    if not snaps:
        click.echo("no snapshots")
        return
    rows = [
        [
            s["name"],
            s["source"],
            s["driver"],
            _mib(s["bytes"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["created_at"])),
        ]
        for s in snaps
    ]
    click.echo(table(rows, ["NAME", "SOURCE", "DRIVER", "SIZE", "CREATED"]))


@snapshot_group.command(name="inspect")
@click.argument("name")
def snapshot_inspect(name: str) -> None:
    """Print a snapshot's full record (JSON)."""
    snap = host().snapshots.get(name)
    echo_json({**snap.record, "path": str(snap.dir)})


@snapshot_group.command(name="rm")
@click.argument("names", nargs=-1, required=True)
def snapshot_rm(names: tuple[str, ...]) -> None:
    """Delete snapshots (VMs restored from them are not affected)."""
    store = host().snapshots
    for n in names:
        store.remove(n)
        click.echo(f"removed snapshot {n}")


@click.command()
@click.argument("snapshot")
@click.option("--name", "new_name", help="Name of the new VM (default: SNAPSHOT-N).")
@click.option(
    "--driver",
    type=click.Choice(["auto", *driver_names()]),
    help="Must match the driver the snapshot was taken with.",
)
@click.option("--wait/--no-wait", "wait_ready", default=True, help="Wait until ready.")
@click.option("--timeout", type=float, help="Seconds to wait for readiness.")
@click.option(
    "--memory-restore",
    type=click.Choice(["copy", "ondemand"]),
    default="copy",
    show_default=True,
    help="ondemand: guest pages fault in from the snapshot (Cloud Hypervisor).",
)
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def restore(
    snapshot: str,
    new_name: str | None,
    driver: str | None,
    wait_ready: bool,
    timeout: float | None,
    memory_restore: str,
    as_json: bool,
) -> None:
    """Start a new VM from SNAPSHOT, with its own disk clones and fresh MACs."""
    t0 = time.monotonic()
    machine = host().restore(snapshot, new_name, driver, wait_ready, timeout, memory_restore)
    click.echo(restored_text(machine.status(), snapshot, time.monotonic() - t0, as_json))


# ---- hotplug ---------------------------------------------------------------------------
@click.group(name="disk")
def disk_group() -> None:
    """Disks: hot-plug into / unplug from a running VM."""


@disk_group.command(name="add")
@click.argument("vm")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--readonly", is_flag=True, help="Attach read-only.")
@click.option("--format", "fmt", type=click.Choice(["raw", "qcow2"]), help="Default: detected.")
@click.option(
    "--force",
    is_flag=True,
    help="Even a device, another user's file, a hard-linked or a system file.",
)
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def disk_add(
    vm: str, path: Path, readonly: bool, fmt: str | None, force: bool, as_json: bool
) -> None:
    """Hot-plug the disk image PATH into the running VM."""
    entry = host().get(vm).attach_disk(path, readonly, fmt, force)
    if as_json:
        echo_json(entry)
    else:
        click.echo(f"{vm}: attached {entry['path']} as {entry['id']}")


@disk_group.command(name="rm")
@click.argument("vm")
@click.argument("device_id")
def disk_rm(vm: str, device_id: str) -> None:
    """Unplug a hot-plugged disk (by the id `disk add` printed)."""
    entry = host().get(vm).detach(device_id)
    click.echo(_detached(vm, device_id, entry, f" ({entry.get('path', '')})"))


@click.group(name="net")
def net_group() -> None:
    """NICs: hot-plug into / unplug from a running VM."""


@net_group.command(name="add")
@click.argument("vm")
@click.option(
    "--mode", type=click.Choice(["user", "tap", "switch"]), default="user", show_default=True
)
@click.option("--switch", "switch_name", help="vmkit switch to join (with --mode switch).")
@click.option("--tap", "tap_name", help="The existing TAP (with --mode tap).")
@click.option("--netns", help="The network namespace the TAP is in.")
@click.option("--bridge", help="Enslave the TAP to this bridge.")
@click.option("--mac", help="MAC address (default: derived from the VM name).")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def net_add(
    vm: str,
    mode: str,
    switch_name: str | None,
    tap_name: str | None,
    netns: str | None,
    bridge: str | None,
    mac: str | None,
    as_json: bool,
) -> None:
    """Hot-plug a NIC into the running VM: NAT, an existing TAP, or a vmkit switch."""
    if mode == "tap" and not tap_name:
        raise InvalidInput("--mode tap needs --tap IFNAME (an existing TAP)")
    if mode != "tap" and (tap_name or netns or bridge):
        raise InvalidInput("--tap, --netns and --bridge go with --mode tap")
    if (mode == "switch") != bool(switch_name):
        raise InvalidInput("--mode switch goes with --switch NAME (and --switch with it)")
    entry = host().get(vm).attach_net(mode, mac, tap_name, netns, bridge, switch_name)
    if as_json:
        echo_json(entry)
    else:
        click.echo(f"{vm}: attached a {entry['mode']} NIC {entry['mac']} as {entry['id']}")


@net_group.command(name="rm")
@click.argument("vm")
@click.argument("device_id")
def net_rm(vm: str, device_id: str) -> None:
    """Unplug a hot-plugged NIC."""
    entry = host().get(vm).detach(device_id)
    click.echo(_detached(vm, device_id, entry))


# ---- migration -------------------------------------------------------------------------
@click.command()
@click.argument("vm")
@click.option("--to", "to", required=True, help="Name of the new VM that takes over.")
@click.option("--timeout", type=float, default=600.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def migrate(vm: str, to: str, timeout: float, as_json: bool) -> None:
    """Live-migrate VM into a new VMM process (a new VM named TO); VM then stops."""
    t0 = time.monotonic()
    target = host().get(vm).migrate(to, timeout)
    st = target.status()
    seconds = round(time.monotonic() - t0, 3)
    if as_json:
        echo_json({**st.to_json(), "migrated_from": vm, "seconds": seconds})
    else:
        click.echo(f"{vm} -> {to}: {st.state} in {seconds:.2f}s (pid {st.pid})")


# ---- switches --------------------------------------------------------------------------
@click.group(name="switch")
def switch_group() -> None:
    """vmkit's userspace L2 switches (`--net switch:NAME`): started and stopped with VMs."""


@switch_group.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def switch_ls(as_json: bool) -> None:
    """Running switches, their VMs and per-port counters."""
    from vmkit.net import switches

    found = switches.describe(host().store)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no switches running")
        return
    rows = []
    for sw in found:
        rx = sum(p["rx_frames"] for p in sw["ports"].values())
        tx = sum(p["tx_frames"] for p in sw["ports"].values())
        rows.append(
            [
                sw["name"],
                str(sw["pid"]),
                ",".join(sw["vms"]),
                str(len(sw["ports"])),
                str(rx),
                str(tx),
            ]
        )
    click.echo(table(rows, ["NAME", "PID", "VMS", "PORTS", "RX", "TX"]))


# ---- published ports -------------------------------------------------------------------
@click.group(name="port")
def port_group() -> None:
    """Host ports forwarded to a VM's NAT NIC."""


@port_group.command(name="ls")
@click.argument("vm")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def port_ls(vm: str, as_json: bool) -> None:
    """Published ports of VM (from its spec, and added while running)."""
    ports = host().get(vm).ports()
    if as_json:
        echo_json(ports)
        return
    rows = [
        [f"{p['host_ip']}:{p['host']}", f"{p['guest']}/{p['proto']}", f"nic{p['nic']}", p["source"]]
        for p in ports
    ]
    click.echo(table(rows, ["HOST", "GUEST", "NIC", "FROM"]) if rows else "no published ports")


@port_group.command(name="add")
@click.argument("vm")
@click.argument("mapping", metavar="[IP:]HOST:GUEST[/tcp|udp]")
def port_add(vm: str, mapping: str) -> None:
    """Forward a host port to the running VM (until it stops)."""
    p = host().get(vm).publish(mapping)
    click.echo(f"{vm}: {p['host_ip']}:{p['host']} -> guest {p['guest']}/{p['proto']}")


@port_group.command(name="rm")
@click.argument("vm")
@click.argument("mapping", metavar="[IP:]HOST[/tcp|udp]")
def port_rm(vm: str, mapping: str) -> None:
    """Stop forwarding a port added with `port add`."""
    p = host().get(vm).unpublish(mapping)
    click.echo(f"{vm}: removed {p['host_ip']}:{p['host']}/{p['proto']}")


@click.command()
@click.argument("vm")
@click.option("--cpus", type=int, help="New vCPU count (up to the spec's max_cpus).")
@click.option("--memory", help="New memory size, e.g. 2G (up to the spec's max_memory).")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def resize(vm: str, cpus: int | None, memory: str | None, as_json: bool) -> None:
    """Resize a running VM's vCPUs and memory (drivers that can: see capabilities)."""
    from vmkit.units import parse_size

    if cpus is None and memory is None:
        raise InvalidInput("give --cpus and/or --memory")
    try:
        mem = parse_size(memory) if memory is not None else None
    except ValueError as exc:
        raise InvalidInput(f"--memory {memory!r}: {exc}") from None
    st = host().get(vm).resize(cpus, mem)
    if as_json:
        echo_json(st.to_json())
    else:
        click.echo(f"{vm}: resized ({st.state})")


@click.command()
@click.argument("vm")
def counters(vm: str) -> None:
    """Per-device I/O counters of a running VM (JSON)."""
    echo_json(host().get(vm).counters())


@click.group(name="share")
def share_group() -> None:
    """virtio-fs shares: hot-plug into / unplug from a running VM."""


@share_group.command(name="add")
@click.argument("vm")
@click.argument("host_dir", type=click.Path(path_type=Path))
@click.argument("tag")
@click.option("--ro", "readonly", is_flag=True, help="Read-only (enforced on the host).")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def share_add(vm: str, host_dir: Path, tag: str, readonly: bool, as_json: bool) -> None:
    """Share HOST_DIR with the running VM as virtio-fs TAG (mount -t virtiofs TAG DIR)."""
    entry = host().get(vm).attach_share(host_dir, tag, readonly)
    if as_json:
        echo_json(entry)
    else:
        click.echo(f"{vm}: shared {entry['host']} as {tag} ({entry['id']})")


@share_group.command(name="rm")
@click.argument("vm")
@click.argument("device_id")
def share_rm(vm: str, device_id: str) -> None:
    """Unplug a hot-plugged share."""
    entry = host().get(vm).detach(device_id)
    click.echo(_detached(vm, device_id, entry))


def _detached(vm: str, device_id: str, entry: dict[str, Any], what: str = "") -> str:
    """Say what happened: some VMMs (Cloud Hypervisor) keep a device until the guest
    acknowledges the eject, and a guest that never does keeps it."""
    if entry.get("pending_removal"):
        return (
            f"{vm}: removal of {device_id}{what} requested, pending guest acknowledgement "
            "(the VMM keeps the device, and its id, until the guest releases it)"
        )
    return f"{vm}: detached {device_id}{what}"
