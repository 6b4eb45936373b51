"""`vmkit exec NAME -- CMD...` without loading the CLI or the library.

A warm exec is one ssh session on the VM's open master connection; Python start-up plus
click, the store and the driver would cost several times that. So the full path (access.ssh
`connect`) leaves a recipe in the VM's folder: the exact ssh argv it chose (user, transport,
pinned host key, control socket) and the VMM it belongs to (pid and kernel start time).
`run` uses it, from `vmkit.entry`, only when everything still holds: same VMM alive, master
socket answering, an exec with no options. Otherwise it returns None and the CLI runs the
full path, which makes its clear errors. Standard library only (and vmkit.process's /proc
reader); Linux only.

The remote side and the pid line are those of access.execute (kept in step by a test).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # not `signal`/`socket`/`json`/`pathlib`: each costs milliseconds to import,
import _socket  # more than this whole path may add to a warm ssh session
import os
import sys

from vmkit.userdirs import user_dir

RECIPE = "exec.json"
MAGIC = "vmkit-exec-1"
PID_TAG = b"VMKIT_PID "
SSH_FAILED = 255
SIGNAL_NAMES = {_signal.SIGINT: "INT", _signal.SIGTERM: "TERM", _signal.SIGHUP: "HUP"}
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (vmkit.process.proc_start: no
    module beyond `os` and `sys`), None when it is gone or /proc cannot tell."""
    from vmkit.process import proc_start

    try:
        known = proc_start(pid)
    except ProcessLookupError:
        return None
    return None if known is None else known[1]


def remember(vm_dir: Path, vmm_pid: int, ssh_argv: list[str], control: Path) -> None:
    """Called by the full path for a VM reached with its default user and transport."""
    from vmkit.store import atomic_write_bytes

    ticks = start_ticks(vmm_pid)
    if ticks is None or any("\0" in w for w in ssh_argv):
        return
    data = "\0".join([MAGIC, str(vmm_pid), str(ticks), str(control), *ssh_argv]).encode()
    path = vm_dir / RECIPE
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write_bytes(path, data)


def forget(vm_dir: Path) -> None:
    """A paused VM must not be reached this way (ssh would hang until it resumes)."""
    (vm_dir / RECIPE).unlink(missing_ok=True)


def data_home() -> str | None:
    """vmkit.paths.data_home on Linux, without pathlib or platformdirs (a test keeps the two
    in step); None where it would refuse the folder: the full path says why."""
    env = os.environ.get("VMKIT_HOME")
    if not env:
        return user_dir("XDG_DATA_HOME", ".local/share", "Library/Application Support")
    path = os.path.abspath(os.path.expanduser(env))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError:
        return None
    mode, uid = st.st_mode & 0o7777, os.getuid()
    if st.st_mode & 0o170000 != 0o040000:  # not a directory
        return None
    if st.st_uid == uid and mode & 0o077 == 0:
        return path
    if st.st_uid not in (uid, 0) or (mode & 0o022 and not mode & 0o1000):
        return None
    return os.path.join(path, f"vmkit-{uid}")


def _parse(args: list[str]) -> tuple[str, list[str]] | None:
    """`NAME -- CMD...` or `NAME CMD...` with no options; None for anything else."""
    if len(args) < 2 or args[0].startswith("-"):
        return None
    name, cmd = args[0], args[1:]
    if cmd[0] == "--":
        cmd = cmd[1:]
    elif cmd[0].startswith("-"):
        return None
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789_.-")
    if not cmd or not 0 < len(name) < 64 or name[0] in ".-" or not set(name) <= allowed:
        return None
    return name, cmd


def _recipe(name: str) -> tuple[int, list[str]] | None:
    """(the VMM's pid, the ssh argv) when the recipe is ours and still holds."""
    home = data_home()
    if home is None:
        return None
    path = os.path.join(home, "vms", name, RECIPE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            data = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        magic, pid_s, ticks_s, control, *ssh = data.decode().split("\0")
        pid, ticks = int(pid_s), int(ticks_s)
    except (OSError, ValueError):
        return None
    if magic != MAGIC or not ssh or start_ticks(pid) != ticks:
        return None
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(control)  # the master connection is up
    except OSError:
        return None
    finally:
        s.close()
    return pid, ssh


def quote(word: str) -> str:
    """One single-quoted shell word, never interpreted (as shlex.quote would quote it, without
    importing re)."""
    return "'" + word.replace("'", "'\"'\"'") + "'"


def script(argv: list[str]) -> str:
    """The remote line: its pid on stderr first, then the command in its place
    (access.execute.remote_script without --env/--workdir)."""
    return 'echo "VMKIT_PID $$" >&2; exec ' + " ".join(quote(a) for a in argv)


def read_pid_line(read: Callable[[int], bytes]) -> tuple[int | None, bytes]:
    """Read ssh's stderr up to the remote shell's pid line: (its pid, what came after it);
    (None, what was read) when ssh spoke first or it ended: the command never started."""
    head = b""
    while chunk := read(4096):
        head += chunk
        if head.startswith(PID_TAG) and b"\n" in head:
            line, rest = head.split(b"\n", 1)
            digits = line[len(PID_TAG) :]
            return (int(digits), rest) if digits.isdigit() else (None, head)
        if not PID_TAG.startswith(head[: len(PID_TAG)]) or len(head) > 64:
            break
    return None, head


def pump(read: Callable[[int], bytes], out_fd: int) -> None:
    """Copy until end of file, every byte written."""
    while chunk := read(65536):
        view = memoryview(chunk)
        while view:
            view = view[os.write(out_fd, view) :]


def run(args: list[str]) -> int | None:
    """Run the exec and give its exit status; None: take the full path (nothing ran)."""
    if not sys.platform.startswith("linux"):
        return None
    parsed = _parse(args)
    if parsed is None:
        return None
    found = _recipe(parsed[0])
    if found is None:
        return None
    ssh = found[1]
    r, w = os.pipe()
    child = os.posix_spawn(
        ssh[0],
        [*ssh, "--", script(parsed[1])],
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, w, 2),
            (os.POSIX_SPAWN_CLOSE, r),
            (os.POSIX_SPAWN_CLOSE, w),
        ],
    )
    os.close(w)
    guest_pid: list[int] = []
    delivered: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        delivered.append(signum)
        if not guest_pid:  # still connecting: stop ssh (the command may not run)
            os.kill(child, signum)
            return
        kill = os.posix_spawn(
            ssh[0],
            [*ssh, "--", "kill", f"-{SIGNAL_NAMES[signum]}", str(guest_pid[0])],
            os.environ,
            file_actions=[(os.POSIX_SPAWN_OPEN, i, os.devnull, os.O_RDWR, 0) for i in (0, 1, 2)],
        )
        os.waitpid(kill, 0)

    for sig in SIGNAL_NAMES:
        _signal.signal(sig, forward)
    with os.fdopen(r, "rb", buffering=0) as err:
        pid, head = read_pid_line(err.read)
        if pid is not None:  # else ssh's own message: the command never started
            guest_pid.append(pid)
            if head:
                os.write(2, head)
            pump(err.read, 2)
    status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    if not guest_pid and not delivered:
        return None  # ssh failed before the command ran: the full path says why
    if not guest_pid:
        return 128 + delivered[-1]
    if status == SSH_FAILED and delivered:
        return 128 + delivered[-1]  # ssh reports a remote death by signal as 255
    return status if status >= 0 else 128 - status
