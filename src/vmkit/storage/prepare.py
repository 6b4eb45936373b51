"""Disks a VM owns: made in its directory at `vmkit create`, deleted with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmkit.storage import disk as diskmod
from vmkit.storage.clone import clone_file


def materialize(spec_json: dict[str, Any], vm_dir: Path, overlay_ok: bool) -> list[dict[str, Any]]:
    """Make every `size:`/`clone:` disk of `spec_json` in `vm_dir`; fill in its path and
    format. `overlay_ok`: the driver reads qcow2, so a clone may be a qcow2 overlay when
    the filesystem cannot reflink (the base must then stay unchanged). Returns what was done
    (method, seconds) for the record. The caller removes `vm_dir` if this raises."""
    done = []
    for i, d in enumerate(spec_json.get("disks", [])):
        if d.get("path") is not None:
            continue
        if d.get("size") is not None:
            target = vm_dir / f"disk{i}.{d.get('format', 'raw')}"
            diskmod.create(target, int(d["size"]), d.get("format", "raw"))
            d["path"] = str(target)
            done.append({"index": i, "made": "empty", "path": str(target)})
        else:
            base = Path(d["clone"])
            base_fmt = diskmod.sniff_format(base)
            # A qcow2 overlay is right only when the VMM reads qcow2 (every Linux VMM here)
            # and the base stays put; a reflink or sparse copy keeps the base's format.
            suffix = "qcow2" if base_fmt == "qcow2" else "img"
            target = vm_dir / f"disk{i}.{suffix}"
            result = clone_file(base, target, allow_overlay=overlay_ok)
            d["path"] = str(target)
            d["format"] = "qcow2" if result.method == "qcow2-overlay" else base_fmt
            done.append({"index": i, "made": "clone", "path": str(target), **result.to_json()})
    return done
