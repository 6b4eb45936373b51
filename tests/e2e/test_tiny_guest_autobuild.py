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
    proc = cli("create", "third", "--arch", "mips")  # refused before any build
    assert proc.returncode == 2 and "arch: 'mips' is not allowed" in proc.stderr
    assert "building" not in proc.stderr


def test_host_run_from_python_boots_the_same_tiny_guest(cli) -> None:
    """A spec with no boot, through the Python API: the tiny guest with the same kernel
    command-line protocol `vmkit run` uses (here: the marker), ready, then stopped."""
    from vmkit.machine import Host
    from vmkit.spec import spec_from_dict

    host = Host(cli.home)
    spec = spec_from_dict(
        {"name": "py", "accelerator": "tcg", "readiness": {"marker": "PY_READY", "timeout": 120}}
    )
    status = host.run(spec)
    assert status.state == "ready"
    boot = host.get("py").spec_json["boot"]
    assert boot["kind"] == "linux" and "vmkit.marker=PY_READY" in boot["cmdline"]
    assert "PY_READY" in (host.get("py").serial_log.read_text())
    assert host.get("py").stop().step == "acpi"
