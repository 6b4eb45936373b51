"""`vmkit guest prune`: old-recipe guests go unless a VM still boots from them."""

from __future__ import annotations

import json
from pathlib import Path

from vmkit.guest.build import recipe_id


def fake_guest(root: Path, name: str) -> Path:
    d = root / "guest" / name
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"arch": "amd64"}))
    (d / "vmlinux").write_bytes(b"\x7fELF" + b"\0" * 508)
    (d / "initramfs.cpio.gz").write_bytes(b"\0" * 512)
    return d


def test_prune_keeps_the_current_recipe_and_what_vms_boot_from(cli, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cli.env["VMKIT_CACHE"] = str(cache)
    current = fake_guest(cache, f"6.1.0-9-amd64-amd64-{recipe_id()}")
    used = fake_guest(cache, "6.1.0-8-amd64-amd64-0000000001")
    unused = fake_guest(cache, "6.1.0-7-amd64-amd64-0000000002")
    foreign = cache / "guest" / "my-notes"
    foreign.mkdir()
    cli.ok(
        "create",
        "old",
        "--kernel",
        str(used / "vmlinux"),
        "--initrd",
        str(used / "initramfs.cpio.gz"),
    )
    assert cli.json("guest", "prune", "--dry-run") == {"would_remove": [str(unused)]}
    assert unused.exists()
    assert cli.json("guest", "prune") == {"removed": [str(unused)]}
    assert not unused.exists() and used.exists() and current.exists() and foreign.exists()
    cli.ok("rm", "old")
    assert cli.json("guest", "prune") == {"removed": [str(used)]}
