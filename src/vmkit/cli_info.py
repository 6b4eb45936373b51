"""`vmkit inspect | logs | console | gc | doctor`: reading a VM and the host."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from vmkit.cli_common import READ_HELP
from vmkit.cli_common import echo_json as _echo_json
from vmkit.cli_common import host as _host
from vmkit.errors import VmkitError


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def inspect(name: str, as_json: bool) -> None:
    """Show a VM's spec, runtime record and derived status."""
    data = _host().get(name).inspect()
    if as_json:
        _echo_json(data)
        return
    st = data["status"]
    click.echo(f"name:    {data['name']}\ndriver:  {data['driver']}\nstate:   {st['state']}")
    for key in ("pid", "ip", "accelerator", "reason", "hint"):
        if st.get(key) is not None:
            click.echo(f"{key + ':':<13}{st[key]}")
    click.echo(f"dir:     {data['paths']['dir']}")
    for key, value in data.get("vmm", {}).items():  # the VMM's own view (Control.inspect_extra)
        click.echo(f"vmm {key + ':':<9}{json.dumps(value, sort_keys=True)}")
    for label, key in (("vmm.log", "vmm_log_tail"), ("serial.log", "serial_log_tail")):
        if st.get(key):
            click.echo(f"--- last lines of {label} ---")
            click.echo("\n".join(st[key]))


@click.command()
@click.argument("name")
@click.option("--vmm", is_flag=True, help="The hypervisor's log instead of the serial console.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the VM stops.")
@click.option("-n", "--lines", type=int, default=None, help="Only the last N lines.")
def logs(name: str, vmm: bool, follow: bool, lines: int | None) -> None:
    """Print the serial console log (or the VMM's log with --vmm)."""
    machine = _host().get(name)
    path = machine.vmm_log if vmm else machine.serial_log
    out = sys.stdout.buffer
    offset = 0
    if path.exists():
        if lines is not None:
            from vmkit.readiness import tail_lines

            out.write(("\n".join(tail_lines(path, lines)) + "\n").encode())
            offset = path.stat().st_size
        else:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
                offset = f.tell()
    out.flush()
    last_check = time.monotonic()
    while follow:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < offset:
            offset = 0
        if size > offset:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read(size - offset)
            offset += len(data)
            out.write(data)
            out.flush()
        if time.monotonic() - last_check > 1.0:
            last_check = time.monotonic()
            if not machine.status().alive:
                break
        time.sleep(0.1)


@click.command()
@click.argument("name")
def console(name: str) -> None:
    """Attach to the serial console (detach with Ctrl-])."""
    from vmkit.console import attach

    sock = _host().get(name).console_socket()
    if sys.stdin.isatty():
        click.echo(f"attached to {name}'s console; detach with Ctrl-]", err=True)
    try:
        attach(Path(sock))
    except (ConnectionRefusedError, FileNotFoundError):
        raise VmkitError(f"cannot connect to {name}'s console at {sock}") from None


@click.command()
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def gc(as_json: bool) -> None:
    """Clean up after VMMs that are gone: stale sockets, cut-off creates/deletes."""
    report = _host().gc()
    if as_json:
        _echo_json(report.to_json())
        return
    for d in report.removed_dirs:
        click.echo(f"removed leftover {d}")
    for p in report.killed_pids:
        click.echo(f"killed orphaned VMM pid {p}")
    for s in report.removed_sockets:
        click.echo(f"removed stale socket {s}")
    for n in report.finalized:
        click.echo(f"cleaned up after {n}")
    if not any(report.to_json().values()):
        click.echo("nothing to clean")


@click.command()
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def doctor(as_json: bool) -> None:
    """What this host can run, and what to install or change."""
    from vmkit.doctor import facts as host_facts

    facts = host_facts()
    mac = facts.get("macos")
    if as_json:
        _echo_json(facts)
        return
    for key, value in facts.items():
        if key == "macos":
            continue
        if isinstance(value, list):
            value = ", ".join(value) or "(none)"
        click.echo(f"{key + ':':<18}{value if value is not None else '(not found)'}")
    if mac is not None:
        _echo_macos(mac)
    if not facts["qemu"]:
        click.echo("fix: install QEMU (Debian/Ubuntu: apt-get install qemu-system-x86)")
    if not facts["tiny_guest"]:
        click.echo("fix: build the tiny guest with `vmkit guest build`")


def _echo_macos(mac: dict[str, Any]) -> None:
    click.echo(f"{'macos:':<18}{mac['macos']} on {mac['cpu']}")
    for name in ("vfkit", "krunkit", "tart"):
        info = mac[name]
        where = f"{info['path']} ({info['version'] or 'version unknown'})"
        click.echo(f"{name + ':':<18}{where if info['path'] else '(not found)'}")
        for item in info["enables"]:
            click.echo(f"{'':<18}- {item}")
    click.echo(f"{'driver auto:':<18}{mac['driver_auto']}")
    for fix in mac["fixes"]:
        click.echo(f"fix: {fix}")
