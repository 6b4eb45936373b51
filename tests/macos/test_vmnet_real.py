"""Real vmnet-helper with real vfkit on a Mac: a guest on vmnet's shared network gets an
address from vmnet's DHCP, and the helper goes with the VM. Skipped everywhere else, with
the reason. Needs vmnet-helper installed (on macOS 15 or older by its install script, which
adds the sudoers rule `sudo --non-interactive` relies on) and the tiny guest for this Mac
(see test_vfkit_real.py for $VMKIT_TEST_KERNEL / $VMKIT_TEST_INITRD)."""

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
        reason=f"vmnet exists only on macOS; this host is {sys.platform}: the vmnet mode is "
        "contract-tested in tests/contract/test_vfkit_vmnet.py",
    ),
    pytest.mark.skipif(
        sys.platform == "darwin"
        and not (
            os.environ.get("VMKIT_VMNET_HELPER")
            or os.access("/opt/vmnet-helper/bin/vmnet-helper", os.X_OK)
            or shutil.which("vmnet-helper")
        ),
        reason="vmnet-helper is not installed (see https://github.com/nirs/vmnet-helper)",
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
            pytest.skip("no guest for this Mac: set VMKIT_TEST_KERNEL and VMKIT_TEST_INITRD")
        kernel, initrd = str(built.kernel), str(built.initrd)
    assert Path(kernel).is_file() and Path(initrd).is_file()
    return ["--kernel", kernel, "--initrd", initrd, "--cmdline", "console=hvc0 quiet"]


@pytest.mark.capability("vfkit", "net_vmnet")
def test_shared_vmnet_gives_an_address_and_the_helper_goes_with_the_vm(
    cli: Any, guest_args: list[str]
) -> None:
    from vmkit.machine import Host
    from vmkit.process import ProcessRef

    status = cli.json(
        "run", "vn1", "--driver", "vfkit", "--net", "vmnet:shared", "--timeout", "90", *guest_args
    )
    assert status["ip"] not in (None, "-")
    helpers = Host().get("vn1").runtime().to_json()["helpers"]
    helper = next(h for h in helpers if h["kind"] == "vmnet")
    cli.ok("stop", "vn1", "--timeout", "20")
    assert ProcessRef(int(helper["pid"]), float(helper["create_time"])).wait_gone(10)
