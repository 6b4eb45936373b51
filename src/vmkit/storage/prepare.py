"""Disks a VM owns: made in its directory at `vmkit create`, deleted with it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit.errors import NotSupported
from vmkit.storage import disk as diskmod
from vmkit.storage.clone import clone_file

if TYPE_CHECKING:
    from vmkit.drivers.base import Driver
    from vmkit.spec import MachineSpec


def check_owned_files(spec: MachineSpec, driver: Driver) -> None:
    """Before anything is made: refuse, by name, VM-owned disks or a seed ISO the driver
    has not declared it can use (docs/capabilities.md)."""
    caps = driver.capabilities
    for i, d in enumerate(spec.disks):
        if d.path is None and not caps.disk_clone:
            what = f"clone: {d.clone}" if d.clone is not None else f"size: {d.size}"
            raise NotSupported(
                f"disks[{i}] ({what}): the {driver.name} driver does not take VM-owned disks "
                "yet; make the file yourself (`vmkit disk create`, or a copy of the image; "
                "`vmkit disk convert --format raw` for a qcow2 one) and give its `path:`"
            )
    if spec.cloud_init is not None and not caps.cloud_init:
        raise NotSupported(
            f"cloud_init: the {driver.name} driver does not attach a cloud-init seed ISO yet; "
            "remove the cloud_init section (see docs/capabilities.md)"
        )


def make_owned_files(
    spec_json: dict[str, Any], vm_dir: Path, store_home: Path, overlay_ok: bool
) -> dict[str, Any]:
    """Everything `vmkit create` makes in a new VM's dir: its `size:`/`clone:` disks and,
    for a `cloud_init:` section, the seed ISO, attached as a last read-only raw disk.
    Fills in `spec_json` and returns the fields for the VM's record. The caller removes
    `vm_dir` if this raises."""
    record: dict[str, Any] = {"disks_made": materialize(spec_json, vm_dir, overlay_ok)}
    if spec_json.get("cloud_init") is not None:
        from vmkit.storage.seed import make_seed

        seed = make_seed(spec_json, vm_dir, store_home)
        spec_json["disks"].append({"path": str(seed), "readonly": True, "format": "raw"})
        record["seed_iso"] = str(seed)
    return record


def materialize(spec_json: dict[str, Any], vm_dir: Path, overlay_ok: bool) -> list[dict[str, Any]]:
    """Make every `size:`/`clone:` disk of `spec_json` in `vm_dir`; fill in its path and
    format. `overlay_ok`: the driver reads qcow2, so a clone may be a qcow2 overlay when
    the filesystem cannot reflink (the base must then stay unchanged); a driver that reads
    only raw gets a qcow2 base converted to raw. Returns what was done (method, seconds)
    for the record. The caller removes `vm_dir` if this raises."""
    done = []
    for i, d in enumerate(spec_json.get("disks", [])):
        if d.get("path") is not None:
            continue
        if d.get("size") is not None:
            target = vm_dir / f"disk{i}.{d.get('format', 'raw')}"
            diskmod.create(target, int(d["size"]), d.get("format", "raw"))
            d["path"] = str(target)
            done.append({"index": i, "made": "empty", "path": str(target)})
            continue
        base = Path(d["clone"])
        base_fmt = diskmod.sniff_format(base)
        if base_fmt == "qcow2" and not overlay_ok:
            target = vm_dir / f"disk{i}.raw"
            t0 = time.monotonic()
            diskmod.convert(base, target, "raw")
            made = {"method": "qcow2-to-raw", "seconds": round(time.monotonic() - t0, 4)}
            fmt = "raw"
        else:
            target = vm_dir / f"disk{i}.{'qcow2' if base_fmt == 'qcow2' else 'raw'}"
            result = clone_file(base, target, allow_overlay=overlay_ok)
            made = result.to_json()
            fmt = "qcow2" if result.method == "qcow2-overlay" else base_fmt
            if target.suffix != f".{fmt}":  # an overlay of a raw base is a qcow2 file
                named = target.with_suffix(f".{fmt}")
                os.replace(target, named)
                target = named
        d["path"] = str(target)
        d["format"] = fmt
        done.append({"index": i, "made": "clone", "path": str(target), "base": str(base), **made})
    return done
