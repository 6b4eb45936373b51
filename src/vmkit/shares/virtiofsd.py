"""virtiofsd sidecars: one per share, started before the VMM, gone with it.

virtiofsd serves one vhost-user client and exits when that client (the VMM) disconnects, so
a stopped VM takes its sidecars with it; vmkit still records their pids and kills any left
behind (a VMM that never started). The C virtiofsd of Debian 12 has no read-only option, so
a read-only share is served from a read-only bind mount of the directory made in a private
mount namespace for that virtiofsd alone (`vmkit.shares.ro_exec`): the guest gets EROFS.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from vmkit import optstr
from vmkit.errors import VmkitError
from vmkit.process import ProcessRef, spawn_detached, wait_for_path

CANDIDATES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", "virtiofsd")
START_WAIT = 10.0


def find() -> str:
    for cand in CANDIDATES:
        found = shutil.which(cand) if "/" not in cand else (cand if Path(cand).exists() else None)
        if found:
            return found
    raise VmkitError(
        "virtiofsd not found (needed for shares): install it — Debian 12: "
        "`apt-get install qemu-system-common` (/usr/lib/qemu/virtiofsd); "
        "Debian 13 / Ubuntu: `apt-get install virtiofsd`"
    )


def argv_for(
    binary: str, source: Path, socket: Path, readonly: bool, field: str = "shares.host"
) -> list[str]:
    src = optstr.virtiofsd(field, source)  # a comma would add options (`,source=/`)
    sock = optstr.check_plain("VMKIT_RUNTIME_DIR (a socket path)", socket)
    argv = [binary, f"--socket-path={sock}", "-o", f"source={src}", "-o", "cache=auto"]
    if readonly:
        return [sys.executable, "-m", "vmkit.shares.ro_exec", str(source), "--", *argv]
    return argv


def start(share: dict[str, Any], socket: Path, log: Path, cwd: Path) -> dict[str, Any]:
    """Start the sidecar for one share and wait until it listens: a VMM connecting earlier
    fails, and Cloud Hypervisor's vm.add-fs blocks ~60 s on a socket nobody serves."""
    socket.unlink(missing_ok=True)
    argv = argv_for(
        find(), Path(share["host"]), socket, bool(share.get("readonly")), f"share {share['tag']!r}"
    )
    proc = spawn_detached(argv, log, cwd)
    if not wait_for_path(proc, socket, START_WAIT) or not _wait_listening(proc, socket):
        stop(proc)
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise VmkitError(f"virtiofsd for share {share['tag']!r} did not start:\n{tail}")
    return {
        "kind": "virtiofsd",
        "tag": share["tag"],
        "pid": proc.pid,
        "create_time": proc.create_time,
        "socket": str(socket),
    }


def stop(proc: ProcessRef) -> None:
    proc.terminate()


def _wait_listening(proc: ProcessRef, path: Path) -> bool:
    """After bind(), until listen(): False if virtiofsd exited or START_WAIT passed."""
    deadline = time.monotonic() + START_WAIT
    while not listening(path):
        if proc.wait_gone(0) or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def listening(path: Path) -> bool:
    """Whether a Unix socket at `path` is in the listening state (/proc/net/unix), without
    connecting: virtiofsd serves exactly one client, so a probe would use it up. Where
    /proc/net/unix cannot be read, the socket file's existence has to do."""
    try:
        table = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return path.exists()
    for line in table:
        parts = line.split()
        if len(parts) >= 8 and parts[-1] == str(path) and int(parts[3], 16) & 0x10000:
            return True
    return False
