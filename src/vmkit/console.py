"""Interactive attach to a VM's serial console socket; Ctrl-] detaches (as in telnet/virsh)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import termios
import time
import tty
from collections.abc import Iterator
from pathlib import Path

DETACH = b"\x1d"  # Ctrl-]


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def attach(path: Path, linger: float = 0.5) -> None:
    """Relay stdin <-> the console socket until Ctrl-] (a tty) or stdin EOF + `linger` s."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    interactive = os.isatty(stdin)
    stdin_open = True
    eof_at: float | None = None
    with _raw(stdin):
        while True:
            watch = [sock] + ([stdin] if stdin_open else [])
            readable, _, _ = select.select(watch, [], [], 0.1)
            if sock in readable:
                data = sock.recv(65536)
                if not data:
                    break  # the VMM closed the console (VM gone)
                os.write(stdout, data)
            if stdin_open and stdin in readable:
                data = os.read(stdin, 4096)
                if interactive and DETACH in data:
                    sock.sendall(data.split(DETACH)[0])
                    break
                if not data:
                    stdin_open, eof_at = False, time.monotonic()
                else:
                    sock.sendall(data.replace(b"\n", b"\r") if not interactive else data)
            if eof_at is not None and time.monotonic() - eof_at >= linger:
                break
    sock.close()
