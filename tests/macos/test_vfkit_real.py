"""Real vfkit on a Mac: boot the tiny guest built for arm64 (or x86_64 on an Intel Mac), wait
for readiness, pause/resume, stop, kill. Skipped everywhere else, with the reason: these are
the tests that would turn the vfkit column from "contract-tested" into "supported".

The guest comes from $VMKIT_TEST_KERNEL and $VMKIT_TEST_INITRD (a kernel and the tiny guest's
initramfs for the Mac's CPU), or from the tiny-guest cache: `vmkit guest build` on the Mac
(it reads the Debian archive directly), or a folder built on Debian with
`vmkit guest build --arch arm64` copied into ~/.cache/vmkit/guest/.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.skipif(
        sys.platform != "darwin",
        reason="vfkit runs only on macOS (Apple's Virtualization.framework); this host is "
        f"{sys.platform}: the driver is contract-tested in tests/contract instead",
    ),
    pytest.mark.skipif(
        sys.platform == "darwin" and shutil.which("vfkit") is None,
        reason="vfkit is not installed: `brew install vfkit`",
    ),
]


@pytest.fixture
def guest_args() -> list[str]:
    kernel, initrd = os.environ.get("VMKIT_TEST_KERNEL"), os.environ.get("VMKIT_TEST_INITRD")
    if not (kernel and initrd):
        from vmkit.guest.build import find_built

        built = find_built()
        if built is None:
            pytest.skip(
                "no guest for this Mac: set VMKIT_TEST_KERNEL and VMKIT_TEST_INITRD "
                "(a kernel and the tiny guest's initramfs for this CPU)"
            )
        kernel, initrd = str(built.kernel), str(built.initrd)
    assert Path(kernel).is_file() and Path(initrd).is_file()
    return ["--kernel", kernel, "--initrd", initrd, "--cmdline", "console=hvc0 quiet"]


@pytest.mark.capability("vfkit", "boot_linux", "readiness", "graceful_stop", "rng")
def test_run_ready_then_stop(cli: Any, guest_args: list[str]) -> None:
    status = cli.json("run", "mac1", "--driver", "vfkit", "--timeout", "60", *guest_args)
    assert status["state"] == "ready"
    result = cli.json("stop", "mac1", "--timeout", "20")[0]
    assert result["step"] in ("acpi", "HardStop")
    assert cli.json("ls")[0]["state"] == "stopped"


@pytest.mark.capability("vfkit", "pause", "readopt")
def test_pause_resume_and_inspect(cli: Any, guest_args: list[str]) -> None:
    cli.json("run", "mac2", "--driver", "vfkit", "--timeout", "60", *guest_args)
    assert cli.json("pause", "mac2")[0]["state"] == "paused"
    assert cli.json("resume", "mac2")[0]["state"] in ("running", "ready")
    data = cli.json("inspect", "mac2")
    assert data["vmm"]["state"]["state"] == "VirtualMachineStateRunning"
    assert "inspect" in data["vmm"]


@pytest.mark.capability("vfkit", "kill", "net_user")
def test_nat_network_gets_an_ip_then_kill(cli: Any, guest_args: list[str]) -> None:
    status = cli.json(
        "run", "mac3", "--driver", "vfkit", "--net", "user", "--timeout", "90", *guest_args
    )
    assert status["ip"] not in (None, "-")
    cli.ok("kill", "mac3")
    assert cli.json("ls")[0]["state"] == "stopped"
