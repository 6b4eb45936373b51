"""Where vmkit keeps things: data home, cache, and the short per-user runtime dir."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from vmkit.errors import VmkitError
from vmkit.userdirs import APP, user_dir


def data_home() -> Path:
    """$VMKIT_HOME, else the user's data folder: `$XDG_DATA_HOME/vmkit` when that is an
    absolute path, else `~/.local/share/vmkit` (macOS: `~/Library/Application Support/vmkit`)."""
    env = os.environ.get("VMKIT_HOME")
    if env:
        return private_root(Path(env).expanduser().absolute(), "VMKIT_HOME")
    return Path(user_dir("XDG_DATA_HOME", ".local/share", "Library/Application Support"))


def cache_dir() -> Path:
    """$VMKIT_CACHE, else `$XDG_CACHE_HOME/vmkit` when that is an absolute path, else
    `~/.cache/vmkit` (macOS: `~/Library/Caches/vmkit`)."""
    env = os.environ.get("VMKIT_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    return Path(user_dir("XDG_CACHE_HOME", ".cache", "Library/Caches"))


def runtime_dir() -> Path:
    """A short, private directory for Unix sockets (macOS caps socket paths at 104 bytes).

    `$XDG_RUNTIME_DIR/vmkit` when that is set, else `/tmp/vmkit-<uid>`. The directory must
    be ours and 0700; a pre-created one owned by someone else is refused (it is in /tmp).
    """
    env = os.environ.get("VMKIT_RUNTIME_DIR")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if env:
        path = private_root(Path(env).expanduser().absolute(), "VMKIT_RUNTIME_DIR")
    elif xdg and sys.platform != "darwin" and Path(xdg).is_dir():
        path = Path(xdg) / APP
    else:
        import tempfile

        base = "/tmp" if sys.platform == "darwin" else tempfile.gettempdir()
        path = Path(base) / f"{APP}-{os.getuid()}"
    ensure_private_dir(path, "VMKIT_RUNTIME_DIR")
    return path


def private_root(path: Path, env: str) -> Path:
    """`path`, or a private `vmkit-<uid>` folder inside it when `path` is an existing folder
    others can use (e.g. /tmp): vmkit never changes the mode of a folder it did not make.

    Nesting is safe only where no one else can rename our folder away: a folder owned by
    us or root, and sticky if others may write to it. Anything else is refused.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return path  # vmkit makes it, 0700
    except OSError as exc:
        raise VmkitError(f"{env}={path}: cannot use it ({exc.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise VmkitError(f"{env}={path} is not a directory; point {env} at a folder")
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == os.getuid() and mode & 0o077 == 0:
        return path
    writable_by_others = mode & 0o022
    if st.st_uid not in (os.getuid(), 0) or (writable_by_others and not mode & stat.S_ISVTX):
        raise VmkitError(
            f"{env}={path} is a folder others control (owner uid {st.st_uid}, mode "
            f"{mode:o}); point {env} at a folder of your own, e.g. /tmp/vk-{os.getuid()}"
        )
    return path / f"{APP}-{os.getuid()}"


def ensure_private_dir(path: Path, env: str = "VMKIT_HOME") -> Path:
    """Make `path` 0700, or check that it is ours and 0700; never chmod an existing one."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise VmkitError(f"{path} exists and is not a directory; move it away") from None
    except OSError as exc:
        raise VmkitError(f"cannot make {path} ({exc.strerror}); check {env}") from None
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise VmkitError(f"{path} is not a directory owned by you; remove it or set {env}")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise VmkitError(
            f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); vmkit does "
            f"not change the mode of a folder it did not make: `chmod 700 {path}` or set {env}"
        )
    return path
