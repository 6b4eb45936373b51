"""`vmkit create` with no kernel and no tiny guest yet builds it first (as Lima fetches its
image on first start), saying so, instead of stopping with a to-do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="builds through apt here")
def test_the_first_create_builds_the_tiny_guest_and_uses_it(cli, tmp_path: Path) -> None:
    cli.env["VMKIT_CACHE"] = str(tmp_path / "cache")
    proc = cli.ok("create", "first")
    assert "the tiny guest is not built yet: building it now" in proc.stderr
    boot = cli.json("inspect", "first")["spec"]["boot"]
    assert Path(boot["kernel"]).is_relative_to(tmp_path / "cache" / "guest")
    proc = cli.ok("create", "second")  # built once
    assert "building" not in proc.stderr
    proc = cli("create", "third", "--arch", "mips")
    assert proc.returncode == 2 and "arch: 'mips' is not one of" in proc.stderr
