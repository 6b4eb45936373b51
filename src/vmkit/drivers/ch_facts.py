"""What real Cloud Hypervisor does beyond its OpenAPI spec, read from its own files.

Found by running the driver against the real v54 binary (issue 13), each one a place where
the API's answer alone misleads: a vCPU crash ends with the same events as a guest
poweroff (only vmm.log tells them apart); a seccomp kill leaves only a line in vmm.log;
`vm.send-migration` answers 204 before the migration worker has done anything (its outcome
is in the event monitor); `vm.remove-device` answers 204 while the device stays until the
guest acknowledges the eject (it is still in `device_tree`).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from vmkit.errors import InvalidInput, NotSupported

RUN_MARKER = "--- vmkit: starting "  # Machine writes it into vmm.log before each launch
# Versions whose migration worker's seccomp filter lacks fsync (vmm/src/seccomp_filters.rs):
# migrating a qcow2 disk there kills the source VMM. No fixed release is known yet.
QCOW2_MIGRATION_FIXED_IN: int | None = None
HUGEPAGES_DIR = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")


def last_run_log(vmm_log: Path) -> str:
    """vmm.log from the last launch on (earlier runs' errors do not count)."""
    try:
        text = vmm_log.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    at = text.rfind(RUN_MARKER)
    return text[at:] if at != -1 else text


def crash_in_log(vmm_log: Path) -> str | None:
    """Why CH died, when its log says so and its events do not: a vCPU error (CH then
    emits vm:shutdown / vm:deleted / vmm:shutdown exactly as for a poweroff) or a thread
    killed by CH's own seccomp filter (no event at all)."""
    text = last_run_log(vmm_log)
    m = re.search(r"VCPU generated error: (.*?)(?:\n\s*\n|\nStack backtrace:|$)", text, re.S)
    if m:
        detail = " ".join(m.group(1).split())
        cause = re.search(r"Unexpected exit reason on vcpu run: (\w+)", text)
        if cause:
            detail = f"vCPU run failed: {cause.group(1)}"
        return f"vCPU error ({detail[:200]})"
    m = re.search(r"Probable seccomp violation: si_syscall=(\d+).*?thread=(\S+)", text)
    if m:
        return (
            f"seccomp violation: Cloud Hypervisor's own sandbox killed it (syscall "
            f"{m.group(1)} in thread {m.group(2)})"
        )
    return None


def migration_result(events: list[dict[str, Any]]) -> str | None:
    """The source's migration outcome from its event monitor, after the last
    `migration-started`: "finished", "failed", or None (still running, or never started)."""
    names = [f"{e.get('source')}:{e.get('event')}" for e in events]
    starts = [i for i, n in enumerate(names) if n == "vm:migration-started"]
    if not starts:
        return None
    for name in names[starts[-1] :]:
        if name == "vm:migration-finished":
            return "finished"
        if name == "vm:migration-failed":
            return "failed"
    return None


def version(binary: str) -> tuple[int, int] | None:
    """(major, minor) of `cloud-hypervisor --version` ("cloud-hypervisor v54.0.0")."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"v(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def refuse_qcow2_migration(disks: list[Any], binary: str) -> None:
    """CH's migration worker dies on fsync when it pauses a qcow2 disk (upstream seccomp
    bug): the source VMM is killed mid-migration. Refuse before anything starts."""
    qcow2 = [i for i, d in enumerate(disks) if d.format == "qcow2"]
    if not qcow2:
        return
    ver = version(binary)
    fixed = QCOW2_MIGRATION_FIXED_IN
    if ver is not None and fixed is not None and ver[0] >= fixed:
        return
    shown = f"v{ver[0]}.{ver[1]}" if ver else "this version"
    raise NotSupported(
        f"disks[{qcow2[0]}] is qcow2: Cloud Hypervisor {shown} cannot live-migrate a qcow2 "
        "disk (its migration worker's seccomp filter lacks fsync, so the source VMM would be "
        "killed mid-migration); stop the VM, or convert the disk to raw "
        "(`vmkit disk convert`), or snapshot it and restore the copy"
    )


def has_backing_file(path: Path) -> bool:
    from vmkit.storage import disk as diskmod

    try:
        return diskmod.backing_file(path) is not None
    except (OSError, ValueError):
        return False


def check_hugepages(memory: int, max_memory: int | None) -> None:
    """hugepages: true needs hugetlbfs and enough free 2 MiB pages now, or CH fails late
    (at vm.boot) with an mmap error; say so before anything is launched."""
    need = (max_memory or memory) // (2 << 20)
    mounted = any(
        line.split()[2] == "hugetlbfs"
        for line in _read("/proc/mounts").splitlines()
        if len(line.split()) > 2
    )
    free_text = _read(str(HUGEPAGES_DIR / "free_hugepages")).strip()
    free = int(free_text) if free_text.isdigit() else 0
    if not mounted or free < need:
        why = "no hugetlbfs is mounted" if not mounted else f"only {free} are free"
        raise InvalidInput(
            f"hugepages: this VM needs {need} free 2 MiB huge pages and {why}; reserve them "
            f"(`echo {need} > {HUGEPAGES_DIR}/nr_hugepages`, hugetlbfs mounted) or set "
            "hugepages: false"
        )


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def device_ids(info: dict[str, Any]) -> set[str]:
    """Ids of the devices CH still has (its `device_tree`, which keeps a removed device until
    the guest acknowledges the eject)."""
    tree = info.get("device_tree") or {}
    return {str(k) for k in tree}


def private_write(path: Path, text: str) -> None:
    """Write `text` to a file only its owner may read (0600), replacing it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)
