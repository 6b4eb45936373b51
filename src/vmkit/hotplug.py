"""Validation and naming for hot-plugged devices (the driver does the plugging)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit.errors import InvalidInput, SpecError, VMStateError

if TYPE_CHECKING:
    from vmkit.spec import Disk, Network


def disk_from_path(path: Path, readonly: bool, fmt: str | None, force: bool = False) -> Disk:
    """A checked Disk for `path`; the format is read from the file when not given."""
    from vmkit import input_checks, optstr
    from vmkit.spec import Disk

    path = path.expanduser().absolute()
    optstr.check_plain("disk", path)
    why = input_checks.disk_problem(path, readonly, force)
    if why is not None:
        raise InvalidInput(f"disk {why}")
    try:
        usable = path.is_file() or (force and path.exists() and not path.is_dir())
    except OSError as exc:
        raise InvalidInput(f"disk {str(path)!r} cannot be used ({exc.strerror})") from None
    if not usable:
        why = "is a directory" if path.is_dir() else "does not exist"
        raise InvalidInput(f"disk {str(path)!r} {why}")
    from vmkit.imagefmt import sniff_format

    sniffed = sniff_format(path)
    if fmt is not None and fmt != sniffed:
        raise InvalidInput(
            f"disk {str(path)!r} is a {sniffed} image, not {fmt}; use --format {sniffed}"
        )
    try:
        return Disk(path=path, readonly=readonly, format=fmt or sniffed, force=force)  # type: ignore[arg-type]
    except SpecError as exc:
        raise SpecError([("disk", msg) for _, msg in exc.problems]) from None


def network(
    mode: str,
    mac: str | None,
    tap: str | None = None,
    netns: str | None = None,
    bridge: str | None = None,
    switch: str | None = None,
) -> Network:
    from vmkit.spec import Network

    try:
        return Network(mode=mode, mac=mac, tap=tap, netns=netns, bridge=bridge, switch=switch)  # type: ignore[arg-type]
    except SpecError as exc:
        raise SpecError(
            [(f"network.{field}" if field else "network", msg) for field, msg in exc.problems]
        ) from None


def next_id(devices: dict[str, Any], prefix: str) -> str:
    n = 0
    while f"{prefix}{n}" in devices:
        n += 1
    return f"{prefix}{n}"


def settle(
    devices: dict[str, Any], present: Callable[[str], bool]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(`devices` without the removals the guest has acknowledged since, those entries):
    an entry marked `pending_removal` stays (its id taken) while the VMM has the device."""
    kept: dict[str, Any] = {}
    gone: list[dict[str, Any]] = []
    for device_id, entry in devices.items():
        if entry.get("pending_removal") and not present(device_id):
            gone.append(entry)
        else:
            kept[device_id] = entry
    return kept, gone


def refuse_still_attached(devices: dict[str, Any], path: Path) -> None:
    """A file whose removal the guest has not acknowledged is still open (and locked) in
    the VMM: say so instead of passing on the VMM's lock error."""
    for device_id, entry in devices.items():
        if entry.get("kind") == "disk" and entry.get("path") == str(path):
            pending = " (removal pending guest acknowledgement)" * bool(
                entry.get("pending_removal")
            )
            raise VMStateError(
                f"disk {str(path)!r} is still attached as {device_id}{pending}; "
                "attach another file, or wait until the guest has released it"
            )
