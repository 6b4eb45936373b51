"""Where vmkit keeps things: data home, cache, and the short per-user runtime dir."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from vmkit.errors import VmkitError

APP = "vmkit"


def data_home() -> Path:
    env = os.environ.get("VMKIT_HOME")
    if env:
        return Path(env).expanduser().absolute()
    from platformdirs import user_data_path

    return user_data_path(APP)


def cache_dir() -> Path:
    env = os.environ.get("VMKIT_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    from platformdirs import user_cache_path

    return user_cache_path(APP)


def runtime_dir() -> Path:
    """A short, private directory for Unix sockets (macOS caps socket paths at 104 bytes).

    `$XDG_RUNTIME_DIR/vmkit` when that is set, else `/tmp/vmkit-<uid>`. The directory must
    be ours and 0700; a pre-created one owned by someone else is refused (it is in /tmp).
    """
    env = os.environ.get("VMKIT_RUNTIME_DIR")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if env:
        path = Path(env)
    elif xdg and sys.platform != "darwin" and Path(xdg).is_dir():
        path = Path(xdg) / APP
    else:
        base = "/tmp" if sys.platform == "darwin" else tempfile.gettempdir()
        path = Path(base) / f"{APP}-{os.getuid()}"
    ensure_private_dir(path)
    return path


def ensure_private_dir(path: Path) -> Path:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise VmkitError(f"{path} exists and is not a directory; move it away") from None
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise VmkitError(f"{path} is not a directory owned by you; remove it or set VMKIT_HOME")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path
