"""`vmkit guest` (the tiny guest) and `vmkit spec` (the machine spec's schema and checks)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import click

from vmkit.cli_common import READ_HELP, build_progress
from vmkit.cli_common import echo_json as _echo_json
from vmkit.cli_common import host as _host
from vmkit.errors import InvalidInput, VmkitError


@click.group()
def guest() -> None:
    """The tiny test/demo guest (Debian kernel + busybox initramfs)."""


ARCH_HELP = (
    "Guest architecture: amd64 (x86_64) or arm64 (aarch64; Apple silicon). Default: this machine's."
)


@guest.command(name="build")
@click.option("--force", is_flag=True, help="Rebuild even if cached.")
@click.option("--arch", default=None, metavar="ARCH", help=ARCH_HELP)
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def guest_build(force: bool, arch: str | None, as_json: bool) -> None:
    """Build (or reuse) the tiny guest from Debian packages (any arch, on Debian/Ubuntu)."""
    from vmkit.guest.build import build

    t0 = time.monotonic()
    img = build(force=force, arch=arch, progress=(lambda m: None) if as_json else build_progress)
    if as_json:
        _echo_json(
            {
                "dir": str(img.dir),
                "kernel": str(img.kernel),
                "initrd": str(img.initrd),
                **img.manifest,
            }
        )
    else:
        click.echo(
            f"tiny guest ready in {time.monotonic() - t0:.1f}s: "
            f"kernel {img.kernel}, initrd {img.initrd}"
        )


@guest.command(name="prune")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def guest_prune(dry_run: bool, as_json: bool) -> None:
    """Remove tiny guests of older vmkit versions no VM or snapshot here boots from."""
    from vmkit.guest.build import prune
    from vmkit.snapshots import SnapshotStore

    host = _host()
    specs = []
    for name in host.store.names():
        with contextlib.suppress(VmkitError, OSError, ValueError, KeyError):
            specs.append(host.store.load_machine(name)["spec"])
    specs += [snap.record["spec"] for snap in SnapshotStore(host.store.home).all()]
    in_use = {
        Path(str(spec["boot"][key])).absolute()
        for spec in specs
        for key in ("kernel", "initrd")
        if spec.get("boot", {}).get(key)
    }
    gone = prune(in_use, dry_run=dry_run)
    if as_json:
        _echo_json({"removed" if not dry_run else "would_remove": [str(d) for d in gone]})
        return
    verb = "would remove" if dry_run else "removed"
    for d in gone:
        click.echo(f"{verb} {d}")
    if not gone:
        click.echo("nothing to prune")


@guest.command(name="path")
@click.option("--arch", default=None, metavar="ARCH", help=ARCH_HELP)
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def guest_path(arch: str | None, as_json: bool) -> None:
    """Where the built tiny guest is."""
    from vmkit.guest.apt import debian_arch_name
    from vmkit.guest.build import find_built

    wanted = debian_arch_name(arch) if arch else None
    img = find_built(arch=wanted)
    if img is None:
        flag = f" --arch {wanted}" if wanted else ""
        raise InvalidInput(f"the tiny guest is not built: run `vmkit guest build{flag}`")
    if as_json:
        _echo_json(
            {
                "dir": str(img.dir),
                "arch": img.arch,
                "kernel": str(img.kernel),
                "bzimage": str(img.bzimage),
                "initrd": str(img.initrd),
            }
        )
    else:
        click.echo(str(img.dir))


@click.group(name="spec")
def spec_group() -> None:
    """Machine spec helpers."""


@spec_group.command(name="schema")
def spec_schema() -> None:
    """Print the MachineSpec JSON schema."""
    from vmkit.spec import MachineSpec

    _echo_json(MachineSpec.json_schema())


@spec_group.command(name="validate")
@click.argument("file", type=click.Path(path_type=Path))
def spec_validate(file: Path) -> None:
    """Check a spec file (fields and referenced files)."""
    from vmkit.drivers import resolve_driver_name
    from vmkit.spec import load_spec_file

    spec = load_spec_file(file)
    resolve_driver_name(spec.driver, spec.arch)  # a driver vmkit has
    click.echo(f"{file}: valid ({spec.name})")
