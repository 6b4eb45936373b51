"""Switch helper processes: started on demand by the first VM that joins, stopped with the last.

Each switch of a store lives in a short runtime dir `sw-<hash>/`: the switch's socket,
`pid.json` (pid + start time, so a reused pid is never mistaken for it), `stats.json` (the
switch's counters) and one lease file per VM that joined. A lease counts while its VM's VMM
is alive, or for a short grace period after it was taken (the VM is still starting). All of
it is done under the switch's lock, so two vmkit processes never start two switches or stop
one a VM is about to use.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit.errors import VmkitError
from vmkit.paths import ensure_private_dir, runtime_dir
from vmkit.process import ProcessRef, spawn_detached, wait_for_path
from vmkit.store import atomic_write_json, file_lock, read_json

if TYPE_CHECKING:
    from vmkit.store import Store

LEASE_GRACE = 60.0  # seconds a lease counts before its VM's VMM is recorded
START_WAIT = 10.0


def switch_dir(store: Store, name: str) -> Path:
    from vmkit.sha import sha256

    key = sha256(f"{store.home.absolute()}\0switch\0{name}".encode()).hexdigest()[:10]
    return runtime_dir() / f"sw-{key}"


def socket_path(store: Store, name: str) -> Path:
    return switch_dir(store, name) / "sock"


def _proc(d: Path) -> ProcessRef | None:
    try:
        info = read_json(d / "pid.json")
    except (FileNotFoundError, ValueError):
        return None
    return ProcessRef(int(info["pid"]), float(info["create_time"]))


def ensure(store: Store, name: str, vm: str, ports: list[str]) -> dict[str, Any]:
    """The running switch `name` (started if needed), with a lease for `vm`'s `ports` (the
    sockets its VMM will bind: the switch floods to them even before they first speak)."""
    d = switch_dir(store, name)
    ensure_private_dir(d, "VMKIT_RUNTIME_DIR")
    (d / "leases").mkdir(mode=0o700, exist_ok=True)
    with file_lock(d / "lock", 30.0, f"switch {name!r}"):
        atomic_write_json(d / "leases" / vm, {"taken": time.time(), "ports": ports})
        proc = _proc(d)
        sock = d / "sock"
        if proc is None or not proc.alive() or not sock.exists():
            if proc is not None:
                proc.signal(signal.SIGKILL)
            proc = _start(d, name, store)
        return {"kind": "switch", "name": name, "pid": proc.pid, "socket": str(sock)}


def add_port(store: Store, name: str, vm: str, port: str) -> dict[str, Any]:
    """`vm` joins switch `name` with one more port (a hot-plugged NIC): its lease keeps the
    ports it has and the switch is started if it is not running."""
    lease = switch_dir(store, name) / "leases" / vm
    try:
        ports = [str(p) for p in read_json(lease).get("ports", [])]
    except (FileNotFoundError, ValueError, AttributeError):
        ports = []
    return ensure(store, name, vm, sorted({*ports, port}))


def drop_port(store: Store, name: str, vm: str, port: str, still_member: bool) -> None:
    """A hot-plugged NIC left: forget its port; without `still_member` (another NIC of the
    VM on this switch) the VM's lease goes, and the switch with the last one."""
    d = switch_dir(store, name)
    lease = d / "leases" / vm
    if still_member:
        with file_lock(d / "lock", 30.0, f"switch {name!r}"):
            try:
                data = read_json(lease)
            except (FileNotFoundError, ValueError):
                return
            data["ports"] = [p for p in data.get("ports", []) if p != port]
            atomic_write_json(lease, data)
        return
    release(store, name, vm)


def _start(d: Path, name: str, store: Store) -> ProcessRef:
    sock = d / "sock"
    sock.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "vmkit.net.switch", "--socket", str(sock)]
    argv += ["--stats", str(d / "stats.json"), "--leases", str(d / "leases")]
    proc = spawn_detached(argv, d / "switch.log", d)
    # recorded before waiting: a vmkit cut off here leaves a switch gc can find and stop
    atomic_write_json(
        d / "pid.json",
        {
            "pid": proc.pid,
            "create_time": proc.create_time,
            "name": name,
            "home": str(store.home),
        },
    )
    if not wait_for_path(proc, sock, START_WAIT):
        proc.terminate()
        log = (d / "switch.log").read_text(errors="replace")[-2000:]
        raise VmkitError(f"the switch {name!r} helper did not start:\n{log}")
    return proc


def release(store: Store, name: str, vm: str | None) -> bool:
    """Drop `vm`'s lease; stop the switch when no live VM holds one. True if it stopped."""
    d = switch_dir(store, name)
    if not d.is_dir():
        return False
    with file_lock(d / "lock", 30.0, f"switch {name!r}"):
        if vm is not None:
            (d / "leases" / vm).unlink(missing_ok=True)
        if any(_lease_live(store, lease) for lease in _leases(d)):
            return False
        proc = _proc(d)
        if proc is not None:
            proc.terminate(5.0)
    shutil.rmtree(d, ignore_errors=True)
    return True


def _leases(d: Path) -> list[Path]:
    leases = d / "leases"
    return sorted(leases.iterdir()) if leases.is_dir() else []


def _lease_live(store: Store, lease: Path) -> bool:
    """A lease counts while its VM's VMM runs, or briefly while the VM is starting."""
    try:
        taken = float(read_json(lease).get("taken", 0.0))
    except (OSError, ValueError, AttributeError):
        taken = 0.0
    rt = store.load_runtime(lease.name) if store.exists(lease.name) else {}
    if "pid" in rt:
        proc = ProcessRef(int(rt["pid"]), float(rt.get("create_time", 0.0)))
        if proc.alive():
            return True
        started = float(rt.get("started_at", 0.0))
        if started >= taken:
            lease.unlink(missing_ok=True)  # that VMM ran after the lease and is gone
            return False
    if time.time() - taken < LEASE_GRACE and store.exists(lease.name):
        return True
    lease.unlink(missing_ok=True)
    return False


def names_of(spec_json: dict[str, Any]) -> list[str]:
    """The switches a VM's spec joins."""
    return sorted(
        {str(n["switch"]) for n in spec_json.get("networks", []) if n.get("mode") == "switch"}
    )


def mine(store: Store) -> list[Path]:
    """Switch dirs in the runtime dir that belong to this store."""
    root = runtime_dir()
    out = []
    for d in sorted(root.glob("sw-*")):
        try:
            info = read_json(d / "pid.json")
        except (FileNotFoundError, ValueError, NotADirectoryError):
            continue
        if Path(info.get("home", "")) == store.home:
            out.append(d)
    return out


def describe(store: Store) -> list[dict[str, Any]]:
    """Running switches of this store with their ports and counters."""
    out = []
    for d in mine(store):
        info = read_json(d / "pid.json")
        proc = _proc(d)
        try:
            stats = read_json(d / "stats.json")
        except (FileNotFoundError, ValueError):
            stats = {}
        out.append(
            {
                "name": info["name"],
                "pid": info["pid"],
                "running": bool(proc and proc.alive()),
                "socket": str(d / "sock"),
                "vms": [p.name for p in _leases(d)],
                "ports": stats.get("ports", {}),
                "macs": stats.get("macs", {}),
                "flooded": stats.get("flooded", 0),
            }
        )
    return out


def gc(store: Store) -> list[str]:
    """Stop switches no live VM uses (e.g. after a VMM crashed); returns their names."""
    stopped = []
    for d in mine(store):
        name = str(read_json(d / "pid.json")["name"])
        if release(store, name, None):
            stopped.append(name)
    return stopped
