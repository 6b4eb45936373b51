"""macOS APFS `clonefile(2)` through ctypes: an O(1) copy-on-write clone of a whole file.

Not run on a Mac yet (the project's CI is Linux); on other systems `available()` is False.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

_NO_CLONE = {errno.ENOTSUP, errno.EXDEV, errno.ENOSYS}


def available() -> bool:
    return sys.platform == "darwin"


def clonefile(src: Path, dst: Path) -> bool:
    """True if `dst` is now an APFS clone of `src`; False if the filesystem cannot clone."""
    import ctypes.util  # here: it loads tempfile and subprocess, and clone_file asks first

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.clonefile(os.fsencode(src), os.fsencode(dst), 0) == 0:
        os.chmod(dst, 0o600)
        return True
    err = ctypes.get_errno()
    if err in _NO_CLONE:
        return False
    raise OSError(err, f"clonefile {src} -> {dst}: {os.strerror(err)}")
