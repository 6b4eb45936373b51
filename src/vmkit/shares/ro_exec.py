"""Run a command with one directory read-only, in a private mount namespace.

    python -m vmkit.shares.ro_exec DIR -- COMMAND...

unshare(CLONE_NEWNS), make every mount private (nothing propagates back to the host), bind
DIR onto itself and remount that bind read-only, then exec COMMAND. Needs CAP_SYS_ADMIN
(virtiofsd needs root anyway). Python 3.11 has no os.unshare, hence ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def read_only_namespace(directory: str) -> None:
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    d = directory.encode()
    _check(libc.mount(d, d, None, MS_BIND | MS_REC, None), f"bind {directory}")
    _check(
        libc.mount(None, d, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None),
        f"remount {directory} read-only",
    )


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m vmkit.shares.ro_exec DIR -- COMMAND...", file=sys.stderr)
        return 2
    directory, command = argv[0], argv[2:]
    try:
        read_only_namespace(directory)
    except OSError as exc:
        print(f"vmkit: cannot make {directory} read-only for virtiofsd: {exc}", file=sys.stderr)
        return 1
    os.execv(command[0], command)  # noqa: S606 - an argv list, no shell involved


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
