"""Sleep until a file grows or a process exits, instead of polling on a fixed interval.

Readiness is a line in the serial log that the VMM writes; a fixed poll adds half its
interval to every boot on average and wakes a 2-core machine for nothing. Linux: inotify
(through libc; the standard library has no binding) plus a pidfd; macOS: kqueue (vnode
write + process exit). Where neither is available `wait` simply sleeps for its timeout, so
callers must still re-check their condition after every wake (they do: wakes are hints).
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
FILE_EVENTS = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
DIR_EVENTS = IN_CREATE | IN_MOVED_TO


_idle_fds: list[int] = []  # inotify fds whose watches were removed, for the next Watch
_idle_pid = [os.getpid()]  # a forked child must not share its parent's idle fds
_KEEP_IDLE = 4
_libc: list[Any] = []


class _Inotify:
    """The file's changes (or, until it exists, its folder's new entries).

    Closing an inotify fd waits for an RCU grace period (5-20 ms here), so a finished
    watch only removes its watches and leaves the fd for the next one; the few idle fds
    close when the process exits."""

    def __init__(self, path: Path):
        import ctypes

        if not _libc:
            # The process's own symbols hold libc's: ctypes.util.find_library("c") would
            # run `ldconfig -p`, ~10 ms.
            _libc.append(ctypes.CDLL(None, use_errno=True))
        self._libc = _libc[0]
        self._wds: list[int] = []
        if _idle_pid[0] != os.getpid():
            _idle_fds.clear()  # the parent's: left open, never used here
            _idle_pid[0] = os.getpid()
        try:
            self.fd = _idle_fds.pop()
            _read_all(self.fd)  # events of the watches removed before
        except IndexError:
            self.fd = int(self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
            if self.fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1") from None
        self.path = path
        self._on_file = False
        try:
            self._arm()
        except OSError:
            self.close()
            raise

    def _add(self, path: Path, mask: int) -> bool:
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask))
        if wd >= 0:
            self._wds.append(wd)
        return wd >= 0

    def _arm(self) -> None:
        if not self._on_file:
            self._on_file = self._add(self.path, FILE_EVENTS)
            if not self._on_file and not self._add(self.path.parent, DIR_EVENTS):
                raise OSError(f"cannot watch {self.path.parent}")

    def drain(self) -> None:
        _read_all(self.fd)
        self._arm()  # the file may have appeared

    def close(self) -> None:
        for wd in self._wds:
            self._libc.inotify_rm_watch(self.fd, wd)
        self._wds = []
        if len(_idle_fds) < _KEEP_IDLE:
            _idle_fds.append(self.fd)
        else:
            os.close(self.fd)


def _read_all(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 65536):
            pass


class Watch:
    """`wait(timeout)` returns early when `path` changes or process `pid` exits."""

    def __init__(self, path: Path, pid: int | None = None):
        self._poll: select.poll | None = None
        self._inotify: _Inotify | None = None
        self._pidfd: int | None = None
        self._kq: Any = None  # select.kqueue (macOS only)
        self._path = path
        self._file_fd: int | None = None
        self._kq_events: list[Any] = []
        try:
            if sys.platform.startswith("linux"):
                self._linux(path, pid)
            elif sys.platform == "darwin":
                self._darwin(path, pid)
        except (OSError, AttributeError):
            self.close()  # fall back to sleeping

    def _linux(self, path: Path, pid: int | None) -> None:
        self._inotify = _Inotify(path)
        self._poll = select.poll()
        self._poll.register(self._inotify.fd, select.POLLIN)
        if pid is not None:
            with contextlib.suppress(OSError):  # gone already, or not ours to see
                self._pidfd = os.pidfd_open(pid)
                self._poll.register(self._pidfd, select.POLLIN)

    def _darwin(self, path: Path, pid: int | None) -> None:
        if sys.platform != "darwin":  # for the type checker on Linux
            return
        self._kq = select.kqueue()
        self._path = path
        self._watch_file()
        if pid is not None:
            self._kq_events.append(
                select.kevent(
                    pid,
                    filter=select.KQ_FILTER_PROC,
                    flags=select.KQ_EV_ADD | select.KQ_EV_ONESHOT,
                    fflags=select.KQ_NOTE_EXIT,
                )
            )

    def _watch_file(self) -> None:
        """kqueue watches an open file: once it exists (until then, short sleeps)."""
        if sys.platform != "darwin":  # for the type checker on Linux
            return
        with contextlib.suppress(OSError):
            self._file_fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            self._kq_events.append(
                select.kevent(
                    self._file_fd,
                    filter=select.KQ_FILTER_VNODE,
                    flags=select.KQ_EV_ADD | select.KQ_EV_CLEAR,
                    fflags=select.KQ_NOTE_WRITE | select.KQ_NOTE_EXTEND,
                )
            )

    @property
    def event_driven(self) -> bool:
        return self._poll is not None or self._kq is not None

    def wait(self, timeout: float) -> None:
        timeout = max(0.0, timeout)
        if self._poll is not None and self._inotify is not None:
            if self._poll.poll(timeout * 1000):
                self._inotify.drain()
        elif self._kq is not None:
            if self._file_fd is None:
                self._watch_file()  # it may have appeared
            events, self._kq_events = self._kq_events, []
            self._kq.control(
                events, 4, timeout if self._file_fd is not None else min(timeout, 0.05)
            )
        else:
            time.sleep(timeout)

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
        for fd in (self._pidfd, self._file_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self._kq is not None:
            self._kq.close()
        self._poll = self._inotify = self._kq = None
        self._pidfd = self._file_fd = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
