"""A small blocking QMP client with timeouts and file-descriptor passing.

Why not QEMU's own `qemu.qmp` (the design's first choice): vmkit talks QMP in short, synchronous
exchanges (QEMU's monitor socket serves one client at a time), and qemu.qmp is asyncio-only;
its event-loop set-up and handshake cost about 40 ms per connection, paid several times on every
`vmkit run`, and its legacy sync shim has no connect timeout. QMP is line-delimited JSON, so a
blocking socket with a deadline is simpler, faster and can pass fds (SCM_RIGHTS) for `getfd`.
"""

from __future__ import annotations

import _socket  # not `socket`: its enums cost ~4 ms to import, more than a QMP exchange
import json  # on a hand-out or in a running VM's `vmkit ls`
import time
from pathlib import Path

from vmkit.errors import VmkitError

TYPE_CHECKING = False  # not typing's: a running VM's `vmkit ls` asks QMP (plain.py)
if TYPE_CHECKING:
    from typing import Any


class QMPError(VmkitError):
    pass


class QMPCommandError(QMPError):
    """QEMU answered the command with an error; `klass` is QEMU's error class."""

    def __init__(self, cmd: str, klass: str, desc: str):
        self.klass = klass
        self.desc = desc
        super().__init__(f"QMP {cmd}: {desc}")


class QMP:
    def __init__(self, path: Path | str, timeout: float = 5.0):
        self._timeout = timeout
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(str(path))
            greeting = self._read_message(time.monotonic() + timeout)
            if "QMP" not in greeting:
                raise QMPError(f"not a QMP greeting: {greeting!r}")
            self.execute("qmp_capabilities")
        except BaseException as exc:
            self._sock.close()
            if isinstance(exc, OSError | ValueError):
                raise QMPError(f"QMP at {path}: {exc}") from exc
            raise

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QMPError("QEMU's QMP socket did not answer in time")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise QMPError("QEMU's QMP socket did not answer in time") from None
            if not chunk:
                raise QMPError("QEMU closed the QMP connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise QMPError(f"unexpected QMP message {message!r}")
        return message

    def execute(
        self,
        cmd: str,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
        fd: int | None = None,
    ) -> Any:
        """Run one command; returns its `return` value. `fd` is passed along (for getfd)."""
        request: dict[str, Any] = {"execute": cmd}
        if args:
            request["arguments"] = args
        data = json.dumps(request).encode() + b"\n"
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        try:
            if fd is None:
                self._sock.sendall(data)
            else:
                import array

                rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", [fd]))]
                self._sock.sendmsg([data], rights)  # socket.send_fds
            while True:
                message = self._read_message(deadline)
                if "event" in message:
                    self.events.append(message)
                    continue
                if "error" in message:
                    err = message["error"]
                    raise QMPCommandError(cmd, str(err.get("class")), str(err.get("desc")))
                return message.get("return")
        except OSError as exc:
            raise QMPError(f"QMP {cmd}: {exc}") from exc

    def wait_event(self, names: set[str], timeout: float) -> dict[str, Any]:
        """Block until one of the named events arrives (events seen earlier count too)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("event") in names:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
