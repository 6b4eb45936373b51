"""`vmkit image pull|ls|rm|path`: verified cloud images in a content-addressed cache."""

from __future__ import annotations

import time
from pathlib import Path

import click

from vmkit.cli_common import READ_HELP, echo_json, table


@click.group(name="image")
def image_group() -> None:
    """Cloud images: download with checksum verification, list, remove."""


@image_group.command(name="pull")
@click.argument("name_or_url")
@click.option("--arch", help="Default: this machine's.")
@click.option(
    "--checksum",
    help="For a URL: the publisher's checksum file URL, or sha256:HEX / sha512:HEX.",
)
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def image_pull(name_or_url: str, arch: str | None, checksum: str | None, as_json: bool) -> None:
    """Download (resuming a cut-off download), verify and cache an image; `oci://REF`: a
    Tart VM image, pulled by Tart into vmkit's shared Tart cache (macOS)."""
    if name_or_url.startswith("oci://"):
        _pull_oci(name_or_url.removeprefix("oci://"), as_json)
        return
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from vmkit.hostinfo import machine_arch
    from vmkit.storage import images

    with Progress(
        *Progress.get_default_columns(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task(f"pulling {name_or_url}", total=None)
        image = images.pull(
            name_or_url,
            arch or machine_arch(),
            checksum,
            lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        echo_json(image.to_json())
    else:
        click.echo(f"{image.name}: {image.path} ({image.algo} verified)")


def _pull_oci(ref: str, as_json: bool) -> None:
    from vmkit.drivers import get_driver
    from vmkit.drivers.tart import tartcli

    cache = tartcli.pull(get_driver("tart").find_binary(), ref)
    if as_json:
        echo_json({"name": ref, "kind": "oci", "driver": "tart", "cache": str(cache)})
    else:
        click.echo(f"{ref}: in Tart's cache {cache} (boot: {{kind: tart, image: {ref}}})")


@image_group.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def image_ls(as_json: bool) -> None:
    """Cached images, and the VMs/snapshots whose qcow2 overlays read them."""
    from vmkit.storage import images
    from vmkit.units import format_size

    found = [(i, images.readers(i)) for i in images.list_images()]
    if as_json:
        echo_json([{**i.to_json(), "read_by": users} for i, users in found])
        return
    if not found:
        click.echo("no images (vmkit image pull debian-12)")
        return
    rows = [
        [
            i.name,
            format_size(i.size),
            f"{i.algo}:{i.digest[:12]}",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(i.pulled_at)),
            ", ".join(users) or "-",
            i.path,
        ]
        for i, users in found
    ]
    click.echo(table(rows, ["NAME", "SIZE", "CHECKSUM", "PULLED", "READ BY", "PATH"]))


@image_group.command(name="rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Even if qcow2 overlays still read it.")
def image_rm(names: tuple[str, ...], force: bool) -> None:
    """Remove cached images. Copies and reflinks made from an image keep working; qcow2
    overlays read through to it, so removal is refused while one exists (unless --force)."""
    from vmkit.storage import images

    for n in names:
        image = images.remove(n, force=force)
        click.echo(f"removed {image.name} ({image.path})")


@image_group.command(name="path")
@click.argument("name")
@click.option("--raw", is_flag=True, help="A raw copy (converted once, cached).")
def image_path(name: str, raw: bool) -> None:
    """Print the cached file of an image (for `--clone-disk`)."""
    from vmkit.storage import images

    image = images.find(name)
    click.echo(str(images.raw_copy(image)) if raw else image.path)


def clone_source(value: Path) -> str:
    """`--clone-disk` takes a file, or the name (or URL) of an image `vmkit image pull` got."""
    if value.exists() or value.parent != Path("."):
        return str(value.absolute())
    from vmkit.errors import NotFound
    from vmkit.storage import images

    try:
        return images.find(str(value)).path
    except NotFound:
        return str(value.absolute())  # reported as a missing file by the spec check
