"""ssh's ProxyCommand for guests reached without a network: bridges ssh's stdin/stdout to a
Unix socket the VMM exposes.

    python proxy.py [--log FILE] serial SOCKET        QEMU virtio-serial port org.vmkit.ssh
    python -m vmkit.access.proxy hybrid-vsock SOCKET PORT   Cloud Hypervisor (and Firecracker)
    python -m vmkit.access.proxy unix SOCKET          vfkit/krunkit virtio-vsock `connect`
    python -m vmkit.access.proxy vsock CID PORT       QEMU vhost-vsock (the host's AF_VSOCK)

`serial`: a virtio-serial port has no connections, only bytes, so the host first says
`vmkit-ssh\\n` and the guest (guest/init.sh) bridges the port to its SSH server only then;
the SSH server speaks first (its version line), which is how the proxy knows the guest is
there before it forwards anything ssh sends. `hybrid-vsock`: the VMM's `CONNECT PORT\\n`
handshake, answered `OK HOSTPORT\\n`. `unix`: vfkit (and krunkit) listen on one Unix socket
per guest port and dial the guest's port for each connection, so a connection that closes
before the SSH server spoke means nothing listens yet (or libkrun's first host-to-guest
connection after boot, which ends at once): it is retried until `wait` runs out. `vsock`: a
plain AF_VSOCK connection to the guest's CID (needs the host's vhost_vsock). Errors go to
stderr starting with "vmkit-proxy:", which access.ssh turns into vmkit's own messages.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time

PREFIX = "vmkit-proxy:"
NO_ANSWER = "no-answer"
NO_SOCKET = "no-socket"
SERIAL_HELLO = b"vmkit-ssh\n"


class ProxyError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{PREFIX} {code}: {message}")
        self.code = code


def connect_unix(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as exc:
        s.close()
        raise ProxyError(NO_SOCKET, f"cannot connect to {path}: {exc.strerror}") from None
    return s


def _recv_first(s: socket.socket, wait: float, what: str) -> bytes:
    """The first bytes the guest sends, within `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProxyError(NO_ANSWER, f"nothing answered on {what} within {wait:g}s")
        ready, _, _ = select.select([s], [], [], left)
        if ready:
            data = s.recv(65536)
            if not data:
                raise ProxyError(NO_ANSWER, f"{what} closed before the SSH server spoke")
            return data


def open_serial(path: str, wait: float) -> tuple[socket.socket, bytes]:
    s = connect_unix(path)
    s.sendall(SERIAL_HELLO)
    return s, _recv_first(s, wait, "the VM's virtio-serial port org.vmkit.ssh")


def open_hybrid_vsock(path: str, port: int, wait: float) -> tuple[socket.socket, bytes]:
    s = connect_unix(path)
    s.sendall(f"CONNECT {port}\n".encode())
    buf = b""
    while b"\n" not in buf:
        chunk = _recv_first(s, wait, f"the VMM's vsock socket (port {port})")
        buf += chunk
    line, rest = buf.split(b"\n", 1)
    if not line.startswith(b"OK "):
        raise ProxyError(NO_ANSWER, f"vsock port {port}: the VMM answered {line[:80]!r}")
    return s, rest


def open_unix(path: str, wait: float) -> tuple[socket.socket, bytes]:
    deadline = time.monotonic() + wait
    while True:
        s = connect_unix(path)
        try:
            return s, _recv_first(s, max(deadline - time.monotonic(), 0.05), "vsock port 22")
        except ProxyError:
            s.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def open_vsock(cid: int, port: int, wait: float) -> tuple[socket.socket, bytes]:
    family = getattr(socket, "AF_VSOCK", None)  # Linux only
    try:
        if family is None:
            raise OSError(0, "not in this platform's socket module")
        s = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ProxyError(NO_SOCKET, f"this host has no AF_VSOCK sockets: {exc.strerror}") from None
    s.settimeout(wait)
    try:
        s.connect((cid, port))
    except OSError as exc:
        s.close()
        why = "timed out" if isinstance(exc, TimeoutError) else exc.strerror
        raise ProxyError(NO_ANSWER, f"vsock CID {cid} port {port}: {why}") from None
    s.settimeout(None)
    return s, b""


def relay(s: socket.socket, first: bytes, fd_in: int = 0, fd_out: int = 1) -> None:
    """Copy fd_in -> s and s -> fd_out until the guest side closes."""
    if first:
        os.write(fd_out, first)
    inputs = [s.fileno(), fd_in]
    while True:
        ready, _, _ = select.select(inputs, [], [])
        if s.fileno() in ready:
            data = s.recv(65536)
            if not data:
                return
            view = memoryview(data)
            while view:
                view = view[os.write(fd_out, view) :]
        if fd_in in ready:
            data = os.read(fd_in, 65536)
            if not data:
                s.shutdown(socket.SHUT_WR)
                inputs.remove(fd_in)
            else:
                s.sendall(data)


def _report(message: str, log: str | None) -> None:
    """To stderr, and to `log`: ssh sends a ControlPersist master's ProxyCommand stderr to
    /dev/null, so vmkit reads the reason from the file."""
    print(message, file=sys.stderr)
    if log:
        with open(log, "a") as f:
            f.write(message + "\n")


def main(argv: list[str]) -> int:
    wait = float(os.environ.get("VMKIT_SSH_WAIT", "15"))
    log = None
    if argv[:1] == ["--log"] and len(argv) > 1:
        log, argv = argv[1], argv[2:]
    try:
        if len(argv) == 2 and argv[0] == "serial":
            s, first = open_serial(argv[1], wait)
        elif len(argv) == 3 and argv[0] == "hybrid-vsock":
            s, first = open_hybrid_vsock(argv[1], int(argv[2]), wait)
        elif len(argv) == 2 and argv[0] == "unix":
            s, first = open_unix(argv[1], wait)
        elif len(argv) == 3 and argv[0] == "vsock":
            s, first = open_vsock(int(argv[1]), int(argv[2]), wait)
        else:
            print(
                f"{PREFIX} usage: serial SOCKET | hybrid-vsock SOCKET PORT | unix SOCKET | "
                "vsock CID PORT",
                file=sys.stderr,
            )
            return 2
    except ProxyError as exc:
        _report(str(exc), log)
        return 1
    try:
        relay(s, first)
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
