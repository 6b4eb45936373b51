"""Snapshots whose RAM the restored copies share, copy-on-write (QEMU).

A saved migration stream holds the guest's RAM, so every restored copy reads it into its own
anonymous memory. Instead (as Kata Containers' VM templating): once per snapshot, at
`snapshot create`, a throwaway QEMU (`-S`, never runs the guest) loads the stream into a
`memory-backend-file,share=on` at RAM_FILE in the snapshot and saves it again with the
migration capability `x-ignore-shared`, so the new stream holds only device state. A copy
maps RAM_FILE with `share=off` (MAP_PRIVATE): its unmodified pages are the page cache's one
set for all copies, a page it writes becomes its own, and the file never changes.

The backend keeps the id of the machine's default RAM block (`pc.ram`), so a copy can be
snapshotted or migrated like any VM. Guests with a balloon are not converted: QEMU punches
holes into a private file mapping's file when the guest gives pages back, which would
damage the RAM every copy maps. Nothing here touches the original stream until the new one
is complete: a failed conversion leaves the snapshot as it was saved.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit.drivers.base import LaunchContext
from vmkit.drivers.qmp import QMP, QMPError
from vmkit.errors import VmkitError

if TYPE_CHECKING:
    import subprocess

    from vmkit.drivers.base import Driver
    from vmkit.spec import MachineSpec

RAM_FILE = "ram.qemu"
SHARED_STATE = "state-shared.qemu"
CONVERT_TIMEOUT = 300.0
WORK_PREFIX = "vmkit-ram-"  # the converter's folder in the runtime dir
WORK_LOCK = ".lock"  # held by the converting vmkit; gc removes folders nobody holds
UNLOCKED_GRACE = 60.0  # seconds: a folder that has no lock yet is being made
RUNTIME = "VMKIT_RUNTIME_DIR (the snapshot converter's folder)"
_NETDEV_ID = re.compile(r"(?:^|,)id=(net\d+)(?:,|$)")


def ram_block_id(arch: str) -> str:
    """The default RAM backend's id on vmkit's machine types (the RAM block's name in a
    migration stream)."""
    return "mach-virt.ram" if arch == "aarch64" else "pc.ram"


def backend_args(arch: str, memory: int, path: Path, share: bool) -> list[str]:
    from vmkit import optstr

    block = ram_block_id(arch)
    mem_path = optstr.qemu("VMKIT_HOME (the snapshot's RAM file)", path)
    return [
        "-object",
        f"memory-backend-file,id={block},size={memory >> 20}M,"
        f"mem-path={mem_path},share={'on' if share else 'off'}",
        "-machine",
        f"memory-backend={block}",
    ]


def refusal(spec: MachineSpec) -> str | None:
    """Why this guest's snapshot keeps RAM in its stream, or None."""
    if spec.balloon:
        return "the guest has a balloon (a page it gives back would punch the shared file)"
    if spec.shares:
        return "the guest has virtio-fs shares (its RAM is a memfd the sidecar maps)"
    return None


def convert(
    driver: Driver,
    spec: MachineSpec,
    staging: Path,
    state: dict[str, Any],
    disks: list[dict[str, Any]],
    accel: str,
) -> dict[str, Any]:
    """Turn `staging`'s stream into RAM_FILE + an x-ignore-shared stream; the new state
    metadata. The original stream is removed only once the new pair is complete."""
    import shutil  # here, as tempfile and subprocess: a restore never needs them
    import subprocess
    import tempfile

    from vmkit.paths import runtime_dir

    original = staging / str(state["state_file"])
    ram_tmp, stream_tmp = staging / f".{RAM_FILE}.tmp", staging / f".{SHARED_STATE}.tmp"
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=runtime_dir()))
    held = _hold(work)  # while held, `vmkit gc` leaves `work` alone
    proc: subprocess.Popen[bytes] | None = None
    t0 = time.monotonic()
    try:
        fd = os.open(ram_tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, spec.memory)
        finally:
            os.close(fd)
        argv = _converter_argv(driver, spec, staging, disks, work, accel)
        argv += backend_args(driver.arch, spec.memory, ram_tmp, share=True)
        argv += ["-S", "-incoming", "defer"]
        with (work / "qemu.log").open("wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
                preexec_fn=_die_with_parent,  # a vmkit killed by SIGKILL leaves no converter
            )
        _wait_socket(work / "qmp", proc, work / "qemu.log")
        with QMP(work / "qmp", timeout=60.0) as q:
            _migrate(q, "migrate-incoming", original, os.O_RDONLY, [])
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            _migrate(q, "migrate", stream_tmp, flags, ["x-ignore-shared"])
            with contextlib.suppress(QMPError):
                q.execute("quit")
        proc.wait(30)
        fd = os.open(ram_tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        ram_tmp.rename(staging / RAM_FILE)
        stream_tmp.rename(staging / SHARED_STATE)
        original.unlink()
    except VmkitError as exc:
        _discard(staging, ram_tmp, stream_tmp)
        log_file = work / "qemu.log"
        said = log_file.read_text(errors="replace").strip()[-300:] if log_file.is_file() else ""
        raise VmkitError(f"{exc}{f' (QEMU: {said})' if said else ''}") from None
    except BaseException:
        _discard(staging, ram_tmp, stream_tmp)
        raise
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
        os.close(held)
    return {
        **state,
        "state_file": SHARED_STATE,
        "state_bytes": (staging / SHARED_STATE).stat().st_size,
        "shared_ram": {
            "file": RAM_FILE,
            "bytes": spec.memory,
            "block": ram_block_id(driver.arch),
            "seconds": round(time.monotonic() - t0, 3),
        },
    }


def _discard(staging: Path, *tmp: Path) -> None:
    for path in (*tmp, staging / RAM_FILE, staging / SHARED_STATE):
        path.unlink(missing_ok=True)


def _hold(work: Path) -> int:
    fd = os.open(work / WORK_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def remove_stale_work_dirs() -> list[str]:
    """The work folders of conversions whose vmkit died (its converter died with it): the
    ones whose lock nobody holds. A folder too new to have its lock yet is left alone."""
    import shutil

    from vmkit.paths import runtime_dir

    removed = []
    for work in runtime_dir().glob(WORK_PREFIX + "*"):
        try:
            fd = os.open(work / WORK_LOCK, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - work.stat().st_mtime > UNLOCKED_GRACE:
                    shutil.rmtree(work, ignore_errors=True)
                    removed.append(str(work))
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: a conversion is running
            shutil.rmtree(work, ignore_errors=True)
            removed.append(str(work))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _converter_argv(
    driver: Driver,
    spec: MachineSpec,
    staging: Path,
    disks: list[dict[str, Any]],
    work: Path,
    accel: str,
) -> list[str]:
    """The snapshot's own argv (same devices), on its disk clones in `staging`, with its
    sockets in `work` and no NIC on the outside world (the guest never runs). A NAT NIC
    keeps a user-mode backend: slirp's state (its DHCP leases) is in the stream. Any other
    NIC gets a hub port, which has none: a copy on a switch or TAP refuses to load a
    stream holding a slirp section its own backend lacks."""
    import shutil

    from vmkit import optstr
    from vmkit.spec import spec_from_dict

    data = spec.to_json()
    for d in disks:
        if not d["shared"]:
            data["disks"][d["index"]]["path"] = str(staging / d["file"])
    data["networks"] = [{**n, "mode": "user", "publish": []} for n in data.get("networks", [])]
    for key in ("tap", "netns", "bridge", "switch"):
        for n in data["networks"]:
            n.pop(key, None)
    vm_dir = work / "vm"
    vm_dir.mkdir(mode=0o700)
    if (staging / "files").is_dir():
        for f in (staging / "files").iterdir():
            shutil.copyfile(f, vm_dir / f.name)
    sockets = {r: work / r for r in ("qmp", "con", "ctl", "ssh")}
    sockets["console"] = sockets.pop("con")
    ctx = LaunchContext(vm_dir, work / "serial.log", work / "events.log", sockets, accel)
    plan = driver.plan(spec_from_dict(data, check_files=False), ctx)
    for fifo in plan.fifos.values():
        os.mkfifo(fifo, 0o600)
    nat = {f"net{i}" for i, n in enumerate(spec.networks) if n.mode in ("user", "nat")}
    argv = list(plan.argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "-netdev" and (m := _NETDEV_ID.search(argv[i + 1])):
            netdev = m.group(1)
            hub = f"hubport,id={netdev},hubid={netdev.removeprefix('net')}"
            argv[i + 1] = f"user,id={netdev}" if netdev in nat else hub
        elif arg == "-chardev" and argv[i + 1].startswith("socket,id=ssh0,"):
            # The stream says whether a host was on the SSH port; QEMU tells the guest of a
            # change only once the guest runs, which it never does here. A pipe is always
            # connected, so every copy (no host yet) tells its guest "host gone" and a
            # bridge left over from the source's SSH session ends.
            for end in (".in", ".out"):
                os.mkfifo(work / f"sshpipe{end}", 0o600)
            argv[i + 1] = f"pipe,id=ssh0,path={optstr.qemu(RUNTIME, work / 'sshpipe')}"
    return argv


def _migrate(q: QMP, cmd: str, path: Path, flags: int, caps: list[str]) -> None:
    from vmkit.drivers.qemu.migration import await_migration

    wanted = [{"capability": c, "state": True} for c in ("events", *caps)]
    q.execute("migrate-set-capabilities", {"capabilities": wanted})
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    try:
        q.execute("getfd", {"fdname": "vmkit-ram"}, fd=fd)
    finally:
        os.close(fd)
    q.execute(cmd, {"uri": "fd:vmkit-ram"})
    await_migration(q, f"converting the snapshot ({cmd})", CONVERT_TIMEOUT)


def _die_with_parent() -> None:
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _wait_socket(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip()[-400:]
            raise VmkitError(f"QEMU exited while converting the snapshot: {tail}")
        if time.monotonic() > deadline:
            raise VmkitError("QEMU did not open its QMP socket while converting the snapshot")
        time.sleep(0.01)
