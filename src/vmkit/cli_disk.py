"""`vmkit disk create|info|convert|resize`: disk images, outside any VM."""

from __future__ import annotations

from pathlib import Path

import click

from vmkit.cli_common import READ_HELP, echo_json, host
from vmkit.cli_live import disk_group
from vmkit.errors import InvalidInput


def _size(value: str) -> int:
    from vmkit.units import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise InvalidInput(f"size {value!r}: {exc}") from None


def _show(info: object, as_json: bool) -> None:
    from vmkit.storage.disk import DiskInfo
    from vmkit.units import format_size

    assert isinstance(info, DiskInfo)
    if as_json:
        echo_json(info.to_json())
        return
    click.echo(
        f"{info.path}: {info.format}, {format_size(info.virtual_size)} virtual, "
        f"{format_size(info.allocated)} allocated"
        + (f", backing file {info.backing_file}" if info.backing_file else "")
    )


@disk_group.command(name="create")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--size", required=True, help="e.g. 10G, 512M.")
@click.option("--format", "fmt", type=click.Choice(["raw", "qcow2"]), default="raw")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def disk_create(path: Path, size: str, fmt: str, as_json: bool) -> None:
    """Make a new empty disk image (sparse raw, or qcow2)."""
    from vmkit.storage import disk

    _show(disk.create(path.absolute(), _size(size), fmt), as_json)


@disk_group.command(name="info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def disk_info(path: Path, as_json: bool) -> None:
    """Format, virtual and allocated size, backing file."""
    from vmkit.storage import disk

    _show(disk.info(path.absolute()), as_json)


@disk_group.command(name="convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["raw", "qcow2"]), required=True)
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def disk_convert(src: Path, dst: Path, fmt: str, as_json: bool) -> None:
    """Copy SRC into a new DST in another format (qcow2 <-> raw), with a progress bar."""
    from rich.progress import Progress

    from vmkit.machine import disk_ops

    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task(f"converting to {fmt}", total=100)
        info = disk_ops.convert(
            host(), src.absolute(), dst.absolute(), fmt, lambda pct: bar.update(task, completed=pct)
        )
    _show(info, as_json)


@disk_group.command(name="resize")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--size", required=True, help="New size (grow only).")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def disk_resize(path: Path, size: str, as_json: bool) -> None:
    """Grow a disk image; refused while a running VM uses it (or an overlay of it)."""
    from vmkit.machine import disk_ops

    _show(disk_ops.resize(host(), path.absolute(), _size(size)), as_json)
