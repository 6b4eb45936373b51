"""Process identity and control: a pid is only "our VMM" if its start time matches too."""

from __future__ import annotations

import os
import sys
import time

from vmkit.plain import Frozen

TYPE_CHECKING = False  # not typing's: `vmkit ls` loads this module (plain.py)
if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

# create_time() is reported with ~10 ms resolution; allow for float rounding.
_CT_TOLERANCE = 0.05
_boot_time: list[float] = []


def proc_start(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc/PID/stat on Linux;
    None elsewhere or where /proc cannot tell (e.g. mounted with hidepid). Raises
    ProcessLookupError when the process does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[19])  # field 22 of the whole line: starttime
    except (IndexError, ValueError):
        return None


def _proc_stat(pid: int) -> tuple[str, float] | None:
    """(state letter, start time) as `proc_start` reads it, the time in psutil's terms:
    psutil computes its create_time() the same way (btime + start ticks / CLK_TCK), and
    reading it here spares every `run`, `restore` and `status` psutil's import (~10 ms)."""
    known = proc_start(pid)
    if known is None:
        return None
    booted = _linux_boot_time()
    if booted is None:
        return None
    state, ticks = known
    return state, booted + ticks / os.sysconf("SC_CLK_TCK")


def _linux_boot_time() -> float | None:
    if not _boot_time:
        try:
            with open("/proc/stat", "rb") as f:
                btime = next(line for line in f if line.startswith(b"btime "))
        except (OSError, StopIteration):
            return None
        _boot_time.append(float(btime.split()[1]))
    return _boot_time[0]


def boot_time() -> float:
    """When this host booted (seconds since the epoch): what a file written before then
    describes, no process alive now can be."""
    booted = _linux_boot_time() if sys.platform.startswith("linux") else None
    if booted is not None:
        return booted
    import psutil

    return float(psutil.boot_time())


class ProcessRef(Frozen):
    _fields = ("pid", "create_time")
    __slots__ = _fields

    def __init__(self, pid: int, create_time: float):
        self.pid, self.create_time = pid, create_time

    def alive(self) -> bool:
        try:
            known = _proc_stat(self.pid)
        except ProcessLookupError:
            return False
        if known is not None:
            state, started = known
            return abs(started - self.create_time) <= _CT_TOLERANCE and state not in "ZX"
        import psutil  # macOS, or a /proc that hides other processes

        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > _CT_TOLERANCE:
                return False  # pid reused by another process
            return proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False
        except psutil.AccessDenied:
            return True

    def signal(self, sig: int) -> bool:
        """Send `sig` if this is still our process; False if it is gone."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def terminate(self, grace: float = 3.0) -> bool:
        """SIGTERM, up to `grace` seconds to exit, then SIGKILL; True once it is gone."""
        import signal

        if not self.signal(signal.SIGTERM):
            return True
        if self.wait_gone(grace):
            return True
        self.signal(signal.SIGKILL)
        return self.wait_gone(grace)

    def wait_gone(self, timeout: float, interval: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            reap_child(self.pid)
            if not self.alive():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)


def identify(pid: int) -> ProcessRef:
    """Raises ProcessLookupError when `pid` does not exist."""
    known = _proc_stat(pid)
    if known is not None:
        return ProcessRef(pid, known[1])
    import psutil

    try:
        return ProcessRef(pid, psutil.Process(pid).create_time())
    except psutil.NoSuchProcess:
        raise ProcessLookupError(pid) from None


# Children started by this process, so we can reap them and learn their exit status.
_children: dict[int, subprocess.Popen[bytes]] = {}


def reap_child(pid: int) -> int | None:
    """Exit status of a child we started (None if running or not ours)."""
    proc = _children.get(pid)
    if proc is None:
        return None
    return proc.poll()


def spawn_detached(
    argv: list[str], log: Path, cwd: Path, pass_fds: tuple[int, ...] = ()
) -> ProcessRef:
    """Start `argv` in its own session, stdin /dev/null, stdout+stderr appended to `log`.

    The process outlives us: vmkit is not a daemon.
    """
    import subprocess

    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            pass_fds=pass_fds,
        )
    _children[proc.pid] = proc
    try:
        return identify(proc.pid)
    except ProcessLookupError:
        return ProcessRef(proc.pid, 0.0)


def spawn_orphan(argv: list[str], log: Path) -> None:
    """Start `argv` as spawn_detached does (own session, stdin /dev/null, output appended to
    `log`, no inherited fds), without importing subprocess (~6 ms), for a caller that exits
    at once: the child is then reaped by init. A long-lived caller uses spawn_detached,
    which reaps its children. The child starts in this process's folder."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, fd, 1),
            (os.POSIX_SPAWN_DUP2, fd, 2),
        ]
        actions += [(os.POSIX_SPAWN_CLOSE, n) for n in _inheritable_fds() if n > 2]
        os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsid=True)
    finally:
        os.close(fd)


def _inheritable_fds() -> list[int]:
    """This process's fds that an exec would pass on (subprocess's close_fds closes them)."""
    found = []
    for name in os.listdir("/proc/self/fd" if sys.platform.startswith("linux") else "/dev/fd"):
        try:
            if os.get_inheritable(int(name)):
                found.append(int(name))
        except OSError:  # the listing's own fd, closed by now
            continue
    return found


def find_by_tag(tag: str) -> ProcessRef | None:
    """The live process of this user whose argv names `tag` (a VMM's own control socket
    path, unique per VM): finds a VMM whose pid never reached its record."""
    import psutil

    uid = os.getuid()
    for proc in psutil.process_iter(["cmdline", "uids", "create_time"]):
        try:
            info = proc.info
            if info["uids"] is None or info["uids"].real != uid or not info["cmdline"]:
                continue
            if any(tag in arg for arg in info["cmdline"]):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                return ProcessRef(proc.pid, float(info["create_time"]))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def describe_exit(status: int | None) -> str:
    if status is None:
        return "exit status unknown (the VMM was not a child of this vmkit process)"
    if status < 0:
        try:
            import signal

            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"exited with status {status}"


def wait_for_path(proc: ProcessRef, path: Path, timeout: float) -> bool:
    """Until a helper `proc` makes `path` (its socket, its ready file): False if it exited
    first or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.wait_gone(0) or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
