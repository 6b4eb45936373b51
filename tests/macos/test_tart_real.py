"""Real Tart on an Apple silicon Mac: clone an OCI image into the VM's own TART_HOME, run it
headless, wait for `tart ip`, stop, restart without a second clone, kill, remove. Skipped
everywhere else, with the reason: these are the tests that would turn the tart column from
"contract-tested" into "supported".

The image is $VMKIT_TEST_TART_IMAGE (default ghcr.io/cirruslabs/ubuntu:latest, a few GB;
pulled once into vmkit's shared Tart cache, $VMKIT_HOME/tart-cache).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.skipif(
        sys.platform != "darwin" or platform.machine() != "arm64",
        reason="Tart runs only on Apple silicon Macs; this host is "
        f"{sys.platform}/{platform.machine()}: the driver is contract-tested in tests/contract",
    ),
    pytest.mark.skipif(
        sys.platform == "darwin" and shutil.which("tart") is None,
        reason="Tart is not installed: `brew install cirruslabs/cli/tart`",
    ),
]

IMAGE = os.environ.get("VMKIT_TEST_TART_IMAGE", "ghcr.io/cirruslabs/ubuntu:latest")


def spec_file(tmp_path: Path, name: str, **over: Any) -> str:
    data = {"name": name, "driver": "tart", "boot": {"kind": "tart", "image": IMAGE},
            "networks": ["user"], "cpus": 2, "memory": "2GiB",
            "readiness": {"timeout": 600}, **over}  # fmt: skip
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.capability("tart", "boot_oci", "net_user", "readiness", "graceful_stop")
@pytest.mark.capability("tart", "readopt", "kill")
def test_clone_run_ip_stop_restart_kill(cli: Any, tmp_path: Path) -> None:
    cli.ok("create", "-f", spec_file(tmp_path, "tart1"))
    status = cli.json("start", "tart1", "--wait", "--timeout", "600")
    assert status["state"] == "ready" and status["ip"] not in (None, "-")
    data = cli.json("inspect", "tart1")
    assert data["vmm"]["tart"]["State"] == "running"
    assert cli.json("stop", "tart1", "--timeout", "60")[0]["step"] in ("acpi", "sigterm")
    assert cli.json("ls")[0]["state"] == "stopped"
    cli.ok("start", "tart1", "--wait", "--timeout", "300")
    cli.ok("kill", "tart1")
    cli.ok("rm", "tart1")
    assert not (Path(os.environ["VMKIT_HOME"]) / "vms" / "tart1").exists()


@pytest.mark.capability("tart", "shares", "disk_raw")
def test_a_share_and_a_readonly_disk_reach_the_guest(cli: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("from the host\n")
    disk = tmp_path / "extra.raw"
    with disk.open("wb") as f:
        f.truncate(64 << 20)
    shares = [{"host": str(src), "tag": "src", "readonly": True}]
    disks = [{"path": str(disk), "readonly": True}]
    cli.ok("create", "-f", spec_file(tmp_path, "tart2", shares=shares, disks=disks))
    status = cli.json("start", "tart2", "--wait", "--timeout", "600")
    assert status["state"] == "ready"
    plan = cli.json("inspect", "tart2")["runtime"]["argv"]
    assert f"--dir={src}:ro,tag=src" in plan and f"--disk={disk}:ro" in plan
    cli.ok("kill", "tart2")
    cli.ok("rm", "tart2")
