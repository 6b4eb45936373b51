"""The `vmkit` command: thin — parse, call the library, render. Exit codes: 0, 1, 2."""

from __future__ import annotations

import sys
import time
from typing import Any, NoReturn

import click

from vmkit import __version__
from vmkit.cli_common import READ_HELP, report_ready
from vmkit.cli_common import echo_json as _echo_json
from vmkit.cli_common import host as _host
from vmkit.errors import VmkitError, from_os_error


def _fail(exc: VmkitError) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


# Commands defined in other modules: imported only when run (or listed by --help).
LAZY: dict[str, str] = {
    **{verb: "vmkit.cli_create" for verb in ("create", "run")},
    **{verb: "vmkit.cli_live" for verb in ("pause", "resume", "reboot", "restore", "migrate")},
    "resize": "vmkit.cli_live",
    "counters": "vmkit.cli_live",
    "snapshot": "vmkit.cli_live:snapshot_group",
    "net": "vmkit.cli_live:net_group",
    "switch": "vmkit.cli_live:switch_group",
    "port": "vmkit.cli_live:port_group",
    "share": "vmkit.cli_live:share_group",
    "disk": "vmkit.cli_disk:disk_group",  # cli_disk adds create/info/convert/resize to it
    "image": "vmkit.cli_image:image_group",
    "kernel": "vmkit.cli_kernel:kernel_group",
    "pool": "vmkit.cli_pool:pool_group",
    **{verb: "vmkit.cli_info" for verb in ("inspect", "logs", "console", "gc", "doctor")},
    "guest": "vmkit.cli_guest:guest",
    "spec": "vmkit.cli_guest:spec_group",
    "ssh": "vmkit.cli_access",
    "exec": "vmkit.cli_access:exec_",
    "cp": "vmkit.cli_access",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY:
            return super().get_command(ctx, cmd_name)
        import importlib

        module, _, attr = LAZY[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attr or cmd_name)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VmkitError as exc:
            _fail(exc)
        except OSError as exc:  # a path the user gave that the OS refuses (too long, ...)
            _fail(from_os_error(exc))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmkit")
def main() -> None:
    """Create, start, wait for, stop and delete real virtual machines."""


# ---- lifecycle -------------------------------------------------------------------------
@main.command()
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Print the exact hypervisor argv; run nothing.")
@click.option(
    "--wait/--no-wait", "wait_ready", default=False, help="Wait until the guest is ready."
)
@click.option("--timeout", type=float, help="Readiness timeout in seconds (with --wait).")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def start(name: str, dry_run: bool, wait_ready: bool, timeout: float | None, as_json: bool) -> None:
    """Start a created or stopped VM (detached: it outlives this command)."""
    machine = _host().get(name)
    if dry_run:
        plan = machine.plan()
        if as_json:
            _echo_json(plan.to_json())
        else:
            import shlex

            click.echo(shlex.join(plan.argv))
        return
    t0 = time.monotonic()
    machine.start()
    if wait_ready:
        report_ready(machine.wait_ready(timeout), time.monotonic() - t0, as_json)
    elif as_json:
        _echo_json(machine.status().to_json())
    else:
        click.echo(
            f"started {name} (pid {machine.status().pid}); `vmkit wait {name}` for readiness"
        )


@main.command()
@click.argument("name")
@click.option("--timeout", type=float, help="Seconds (default: the spec's readiness timeout).")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def wait(name: str, timeout: float | None, as_json: bool) -> None:
    """Wait until the guest prints its readiness line."""
    t0 = time.monotonic()
    status = _host().get(name).wait_ready(timeout)
    report_ready(status, time.monotonic() - t0, as_json)


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait after the ACPI power button before SIGTERM.",
)
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def stop(names: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Stop gracefully: ACPI power button, then SIGTERM, then SIGKILL."""
    host = _host()
    results = [host.get(n).stop(timeout) for n in names]
    if as_json:
        _echo_json([r.to_json() for r in results])
    for r in results:
        if not as_json:
            how = {
                "acpi": "guest powered off (ACPI power button)",
                "sigterm": "VMM terminated with SIGTERM after the guest ignored the power button",
                "sigkill": "VMM killed with SIGKILL (did not respond to SIGTERM)",
                "already-stopped": "was not running",
                "crashed": "VMM exited on its own while the power button was pending, "
                "after a crash (see `vmkit inspect`)",
            }.get(r.step, f"VMM stopped by its hard-stop request ({r.step})")
            click.echo(f"{r.name}: {how} in {r.seconds:.2f}s")


@main.command()
@click.argument("names", nargs=-1, required=True)
def kill(names: tuple[str, ...]) -> None:
    """Kill the VMM at once (SIGKILL)."""
    host = _host()
    for n in names:
        r = host.get(n).kill()
        click.echo(f"{n}: {'killed' if r.step == 'sigkill' else 'was not running'}")


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Kill a running VM first.")
def rm(names: tuple[str, ...], force: bool) -> None:
    """Delete VMs and every file they own."""
    host = _host()
    for n in names:
        host.get(n).delete(force=force)
        click.echo(f"removed {n}")


# ---- read commands ---------------------------------------------------------------------
@main.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def ls(as_json: bool) -> None:
    """List VMs with their real state."""
    from vmkit.cli_ls import listing

    click.echo(listing(_host().machines(), as_json))


if __name__ == "__main__":
    main()
