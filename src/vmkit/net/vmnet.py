"""vmnet.framework networks for vfkit/krunkit guests through vmnet-helper (nirs/vmnet-helper):
one helper process per `vmnet` NIC, started with the VM, stopped with it, and released by
`gc` after a crash (the `vmnet` sidecar, sidecars.VmnetHelper).

The helper runs in its socket mode (docs/integration.md): it binds a Unix datagram socket,
prints one JSON line describing the interface (vmnet_mac_address, addresses, MTU), and
serves the first client that sends it a packet; the VMM connects as it does to vmkit's
switch (vfkit `unixSocketPath=`, krunkit `type=unixgram,vfkitMagic=on`). On macOS 15 and
older vmnet needs root for the start: vmkit runs the helper through `sudo --non-interactive`,
which works with the sudoers rule vmnet-helper's installer adds; macOS 26 needs no root.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from vmkit.errors import VMFailed, VmkitError
from vmkit.hostinfo import is_macos
from vmkit.process import ProcessRef, spawn_detached

INSTALLED = "/opt/vmnet-helper/bin/vmnet-helper"  # its install script's location
START_WAIT = 20.0  # seconds for the interface to come up
INSTALL_HINT = (
    "install vmnet-helper: on macOS 15 or older run its install script (it sets up the "
    "sudoers rule vmkit relies on): curl -fsSL https://github.com/nirs/vmnet-helper/"
    "releases/latest/download/install.sh | bash; on macOS 26+: brew tap nirs/vmnet-helper "
    "&& brew install vmnet-helper"
)


def find_helper() -> str:
    """$VMKIT_VMNET_HELPER, the install script's /opt/vmnet-helper, or PATH (Homebrew)."""
    explicit = os.environ.get("VMKIT_VMNET_HELPER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise VmkitError(f"VMKIT_VMNET_HELPER={explicit} is not an executable file")
        return explicit
    if os.access(INSTALLED, os.X_OK):
        return INSTALLED
    found = shutil.which("vmnet-helper")
    if found is None:
        raise VmkitError(f"vmnet-helper not found: {INSTALL_HINT}")
    return found


def needs_root(macos: str | None = None) -> bool:
    """vmnet needs root to start an interface before macOS 26."""
    if not is_macos() and macos is None:
        return False
    text = platform.mac_ver()[0] if macos is None else macos
    try:
        major = int(text.split(".")[0])
    except ValueError:
        return True
    return major < 26


def helper_argv(net: dict[str, Any], socket_path: Path, interface_id: str) -> list[str]:
    argv = [find_helper(), "--socket", str(socket_path), "--interface-id", interface_id]
    argv += ["--operation-mode", str(net["vmnet"])]
    if net["vmnet"] == "bridged":
        argv += ["--shared-interface", str(net["interface"])]
    if needs_root():
        argv = ["sudo", "--non-interactive", "--close-from", "3", *argv]
    return argv


def interface_id(vm: str, index: int) -> str:
    """Stable per VM and NIC: vmnet then hands the same MAC/address range each start."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmkit:{vm}:net{index}")).upper()


def start(
    net: dict[str, Any], index: int, socket_path: Path, vm_dir: Path, vm: str
) -> dict[str, Any]:
    log = vm_dir / f"vmnet{index}.log"
    log.unlink(missing_ok=True)
    socket_path.unlink(missing_ok=True)
    proc = spawn_detached(helper_argv(net, socket_path, interface_id(vm, index)), log, vm_dir)
    deadline = time.monotonic() + START_WAIT
    info: dict[str, Any] | None = None
    while time.monotonic() < deadline and not proc.wait_gone(0):
        info = _interface_info(log)
        if info is not None and socket_path.exists():
            break
        time.sleep(0.05)
    else:
        info = None
    if info is None:
        proc.signal(signal.SIGKILL)
        said = log.read_text(errors="replace").strip()[-600:] if log.exists() else ""
        hint = ""
        if "password" in said or "sudo" in said:
            hint = (
                f"\nvmnet needs root on this macOS: vmkit runs the helper with `sudo "
                f"--non-interactive`, which needs the sudoers rule from vmnet-helper's "
                f"installer ({INSTALL_HINT})"
            )
        raise VMFailed(
            f"VM {vm!r}: vmnet-helper for networks[{index}] did not start:\n{said}{hint}"
        )
    return {
        "kind": "vmnet",
        "pid": proc.pid,
        "create_time": proc.create_time,
        "index": index,
        "socket": str(socket_path),
        "interface": info,
    }


def _interface_info(log: Path) -> dict[str, Any] | None:
    """The helper's one JSON line on stdout (its logs, on stderr, share the file)."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "vmnet_mac_address" in data:
                return data
    return None


def stop(helper: dict[str, Any]) -> None:
    """SIGTERM (the helper's documented stop), then SIGKILL; its socket goes too."""
    proc = ProcessRef(int(helper["pid"]), float(helper["create_time"]))
    proc.signal(signal.SIGTERM)
    if not proc.wait_gone(5):
        proc.signal(signal.SIGKILL)
        proc.wait_gone(5)
    if helper.get("socket"):
        Path(str(helper["socket"])).unlink(missing_ok=True)
