"""`vmkit kernel`: what a kernel file is, what each driver can boot, and unpacking it."""

from __future__ import annotations

from pathlib import Path

import click

from vmkit.cli_common import READ_HELP, echo_json
from vmkit.errors import InvalidInput


@click.group(name="kernel")
def kernel_group() -> None:
    """Kernel image formats (bzImage, vmlinux, arm64 Image, vmlinuz, EFI zboot)."""


def _existing(path: Path) -> Path:
    if not path.is_file():
        why = "is a directory" if path.is_dir() else "does not exist"
        raise InvalidInput(f"{str(path)!r} {why}")
    return path


@kernel_group.command(name="inspect")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def kernel_inspect(file: Path, as_json: bool) -> None:
    """Say what FILE is and which drivers can boot it."""
    from vmkit.drivers import boot_support
    from vmkit.storage.kernel import describe
    from vmkit.units import format_size

    info = describe(_existing(file))
    info.boot = boot_support(info)
    if as_json:
        echo_json(info.to_json())
        return
    click.echo(f"file:    {info.path} ({format_size(info.size)})")
    what = info.format.value
    if info.layers:
        what += " = " + " > ".join(info.layers)
        if info.inner is not None:
            what += f" > {info.inner.value}"
            if info.image_size is not None:
                what += f" ({format_size(info.image_size)})"
    click.echo(f"format:  {what}")
    click.echo(f"arch:    {info.arch or 'unknown'}")
    if info.error:
        click.echo(f"error:   {info.error}")
    click.echo("boots on:")
    for driver, how in info.boot.items():
        click.echo(f"  {driver + ':':<26}{how}")


@kernel_group.command(name="extract")
@click.argument("file", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
def kernel_extract(file: Path, out: Path) -> None:
    """Write the bootable kernel inside FILE to OUT: the raw arm64 Image of a vmlinuz or EFI
    zboot image, or the ELF vmlinux of a bzImage."""
    from vmkit.storage import kernel

    data = _existing(file).read_bytes()
    try:
        if kernel.is_bzimage(data):
            result = kernel.extract_vmlinux(data)
        else:
            result = kernel.arm64_image(data)
    except kernel.KernelFormatError as exc:
        raise InvalidInput(f"{file}: {exc}") from None
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(result)
    tmp.replace(out)
    click.echo(f"wrote {out} ({len(result)} bytes)")
