"""Where VMs live on disk: one 0700 directory per VM, atomic JSON writes, fcntl locks.

Layout under the data home (`VMKIT_HOME` or the user's data folder: paths.data_home):
  vms/<name>/machine.json   the spec (written once at create)
  vms/<name>/runtime.json   pid + start time, sockets, readiness, exit info
  vms/<name>/lock           per-VM fcntl lock; every mutation holds it
  vms/.creating-*, .trash-* a create or delete in flight (or cut off: `vmkit gc` finishes it)
  store.lock                held while a name is claimed or released
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from pathlib import Path

from vmkit import errors
from vmkit.errors import NameInUse, NotFound, VmkitError
from vmkit.names import validate_name
from vmkit.paths import data_home, ensure_private_dir, runtime_dir

TYPE_CHECKING = False  # not typing's: `vmkit ls` loads this module (plain.py)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

MACHINE_FILE = "machine.json"
RUNTIME_FILE = "runtime.json"
LOCK_FILE = "lock"
MAX_SOCKET_PATH = 104  # macOS sun_path limit (Linux allows 108)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Write via a temp file in the same dir, fsync, rename, fsync the dir. Readers see the
    old file or the new one, never a part. Without `durable` nothing is synced: while the
    host runs that is the same, but a host crash may leave the old file, the new one, or
    an empty or torn one."""
    fd, tmp = _temp_beside(path)
    try:
        f = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        sync_dir(path.parent)


def sync_dir(path: Path) -> None:
    """fsync a folder: the names made, renamed or removed in it are on disk."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new private file beside `path`, as tempfile.mkstemp makes one (O_EXCL, 0600, a
    random name), without importing tempfile (random, shutil, hashlib: ~8 ms of a command)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = f"{path.parent}/.{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(path.parent))


def temp_dir_in(parent: Path, prefix: str) -> Path:
    """A new private (0700) folder in `parent`, as tempfile.mkdtemp makes one."""
    for _ in range(100):
        path = parent / f"{prefix}{os.urandom(6).hex()}"
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(parent))


def atomic_write_json(path: Path, obj: Any, durable: bool = True) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    atomic_write_bytes(path, data, durable=durable)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class LockBusy(VmkitError):
    pass


class BrokenRecord(errors.BrokenRecord):
    def __init__(self, name: str, reason: str):
        self.reason = reason
        super().__init__(
            f"VM {name!r} is broken: {reason}; remove it with `vmkit rm --force {name}`"
        )


@contextlib.contextmanager
def file_lock(path: Path, timeout: float, what: str, create: bool = True) -> Iterator[None]:
    """Exclusive fcntl lock on `path`, waiting up to `timeout` seconds (0: try once).

    After locking, the path must still name the locked file: a VM removed (renamed to
    trash) while we waited is reported as gone rather than operated on.
    """
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        raise NotFound(f"{what} does not exist (see `vmkit ls`)") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockBusy(
                        f"{what} is busy: another vmkit process holds its lock; "
                        "retry when it finishes"
                    ) from None
                time.sleep(0.02)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            raise NotFound(f"{what} was removed while waiting for its lock")
        yield
    finally:
        os.close(fd)


class Store:
    def __init__(self, home: Path | None = None):
        self.home = Path(home) if home is not None else data_home()
        self.vms_dir = self.home / "vms"

    def ensure(self) -> None:
        ensure_private_dir(self.home)
        ensure_private_dir(self.vms_dir)

    def vm_dir(self, name: str) -> Path:
        return self.vms_dir / validate_name(name)

    def exists(self, name: str) -> bool:
        return (self.vm_dir(name) / MACHINE_FILE).is_file()

    def names(self) -> list[str]:
        if not self.vms_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.vms_dir.iterdir()
            if not p.name.startswith(".") and (p / MACHINE_FILE).is_file()
        )

    @contextlib.contextmanager
    def store_lock(self, timeout: float = 30.0) -> Iterator[None]:
        self.ensure()
        with file_lock(self.home / "store.lock", timeout, "the vmkit store"):
            yield

    @contextlib.contextmanager
    def vm_lock(self, name: str, timeout: float = 120.0) -> Iterator[None]:
        d = self.vm_dir(name)
        if not (d / MACHINE_FILE).is_file():
            raise NotFound(f"no VM named {name!r} (see `vmkit ls`)")
        with file_lock(d / LOCK_FILE, timeout, f"VM {name!r}", create=False):
            yield

    def lock_busy(self, name: str) -> bool:
        """Whether some vmkit process holds `name`'s lock right now (a probe: it takes the
        lock only if free, and lets go at once)."""
        try:
            with file_lock(self.vm_dir(name) / LOCK_FILE, 0.0, f"VM {name!r}", create=False):
                return False
        except LockBusy:
            return True
        except NotFound:
            return False

    def create(self, name: str, machine: dict[str, Any]) -> Path:
        """Claim `name` and write its record atomically: the dir appears complete or not at all."""
        with self.store_lock():
            final = self.vm_dir(name)
            if final.exists():
                raise NameInUse(
                    f"a VM named {name!r} already exists; pick another name or remove it "
                    f"with `vmkit rm {name}`"
                )
            staging = temp_dir_in(self.vms_dir, f".creating-{name}-")
            try:
                os.chmod(staging, 0o700)
                (staging / LOCK_FILE).touch(mode=0o600)
                # synced with its folder: all of it is on disk before the name appears
                atomic_write_json(staging / MACHINE_FILE, machine)
                os.rename(staging, final)
            except BaseException:
                _rmtree(staging)
                raise
            sync_dir(self.vms_dir)  # the name stays after a host crash
        return final

    def load_machine(self, name: str) -> dict[str, Any]:
        """The record's JSON; BrokenRecord (naming the reason) if it cannot be read (the
        machine layer checks its fields: vmkit.machine.status.broken_reason)."""
        path = self.vm_dir(name) / MACHINE_FILE
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise NotFound(f"no VM named {name!r} (see `vmkit ls`)") from None
        except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
            raise BrokenRecord(name, f"machine.json cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise BrokenRecord(name, f"machine.json is a JSON {type(data).__name__}, not a record")
        return data

    def save_machine(self, name: str, machine: dict[str, Any]) -> None:
        atomic_write_json(self.vm_dir(name) / MACHINE_FILE, machine)

    def load_runtime(self, name: str) -> dict[str, Any]:
        """The runtime record; {} when there is none, or when it cannot be read but was
        written before this host booted (a crash cut its unsynced write: see
        save_runtime); {"corrupt": True} when it cannot be read otherwise."""
        path = self.vm_dir(name) / RUNTIME_FILE
        try:
            data: dict[str, Any] = read_json(path)
        except FileNotFoundError:
            return {}
        except ValueError:
            from vmkit.process import boot_time

            with contextlib.suppress(OSError):
                if path.stat().st_mtime < boot_time():
                    return {}
            return {"corrupt": True}
        return data

    def save_runtime(self, name: str, runtime: dict[str, Any]) -> None:
        """runtime.json holds facts about the running VMM and its helpers, which a host
        crash ends too, so it is not synced (~0.4-2 ms for each of the several writes of a
        start or restore). While the host runs, readers see whole versions; after a crash
        whatever is left describes processes of an earlier boot, which are gone, and an
        unreadable one from before the boot reads as no record (load_runtime)."""
        atomic_write_json(self.vm_dir(name) / RUNTIME_FILE, runtime, durable=False)

    def remove(self, name: str) -> None:
        """Drop the record: rename to a trash dir (atomic), then delete it."""
        with self.store_lock():
            d = self.vm_dir(name)
            trash = self.vms_dir / f".trash-{name}-{os.getpid()}-{time.monotonic_ns()}"
            try:
                os.rename(d, trash)
            except FileNotFoundError:
                raise NotFound(f"no VM named {name!r} (see `vmkit ls`)") from None
        _rmtree(trash)

    def leftovers(self) -> list[Path]:
        """Half-created or half-deleted dirs (only safe to act on under store_lock)."""
        if not self.vms_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.vms_dir.iterdir()
            if p.name.startswith((".creating-", ".trash-")) and p.is_dir()
        )

    def socket_path(self, name: str, kind: str) -> Path:
        """A short socket path in the runtime dir, unique per (data home, VM name)."""
        return self.socket_paths(name, {kind: kind})[kind]

    def socket_paths(self, name: str, kinds: dict[str, str]) -> dict[str, Path]:
        """socket_path for each (role: kind), checking the runtime dir once."""
        from vmkit.sha import sha256

        key = sha256(f"{self.home.absolute()}\0{name}".encode()).hexdigest()[:12]
        base = runtime_dir()
        paths = {role: base / f"{key}.{kind}" for role, kind in kinds.items()}
        for path in paths.values():
            if len(str(path)) >= MAX_SOCKET_PATH:
                raise VmkitError(
                    f"socket path {path} is too long for a Unix socket; set VMKIT_RUNTIME_DIR to "
                    f"a short path of your own, e.g. /tmp/vk-{os.getuid()} (vmkit makes it, 0700)"
                )
        return paths


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
