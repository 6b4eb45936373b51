"""TEST DOUBLE — a scripted stand-in for Cloud Hypervisor's REST API on a Unix socket.

It answers the endpoints vmkit uses with the status codes of the real OpenAPI spec
(204 on success, 200 + PciDeviceInfo for a hot-plug, 204 for a cold add before boot, 404
when no VM is created, 405 when the VM is in the wrong state, 500 with a text body on
failure) and records every request. Where vmkit depends on CH's behaviour beyond the spec,
it copies what CH's source does: event-monitor records are pretty-printed JSON separated by
a blank line; TAP fds arrive as SCM_RIGHTS data on the `vm.add-net` request; a TAP named in
a config is opened by name (TUNSETIFF, failing with EBUSY while another fd holds it);
`vm.snapshot` writes config.json and `vm.restore` reads the config back from the source
folder. It boots nothing: tests that use it check what vmkit *sends* and how it reads the
answers, never that a VM works — the Cloud Hypervisor column of docs/capabilities.md says
"contract-tested" for that reason.
"""

from __future__ import annotations

import array
import fcntl
import http.server
import io
import json
import os
import socket
import socketserver
import struct
import threading
import time
from pathlib import Path
from typing import Any

TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
MAX_FDS = 16


class _UnixHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_UNIX
    daemon_threads = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", 0


class _FirstChunk(io.RawIOBase):
    """A socket's byte stream whose first chunk was already read (with recvmsg)."""

    def __init__(self, first: bytes, sock: socket.socket):
        self.first, self.sock = first, sock

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.first:
            n = min(len(b), len(self.first))
            b[:n] = self.first[:n]
            self.first = self.first[n:]
            return n
        return self.sock.recv_into(b)


def tap_name_of(fd: int) -> str:
    """The interface a TAP fd is attached to (TUNGETIFF); raises OSError if not a TAP."""
    ifr = fcntl.ioctl(fd, TUNGETIFF, bytes(40))
    name, flags = struct.unpack("16sH", ifr[:18])
    if not flags & IFF_TAP:
        raise OSError("not a TAP")
    return name.rstrip(b"\0").decode()


class CHDouble:
    def __init__(self, path: Path):
        self.path = path
        self.state: str | None = None  # None: no VM created
        self.config: dict[str, Any] | None = None
        self.requests: list[tuple[str, str, Any]] = []
        self.received_taps: list[str] = []  # interfaces of the TAP fds CH was handed
        self.ignore_power_button = False
        self.fail: dict[str, tuple[int, str]] = {}  # endpoint -> (status, text)
        self.on_exit: Any = None  # called when the real CH would exit (process mode)
        self.events: Path | None = None
        self._started = time.monotonic()
        self._held: list[int] = []  # fds CH keeps (TAPs)
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

            def setup(self) -> None:
                super().setup()
                # CH reads each request with recvmsg: fds come with the first bytes
                data, anc, _flags, _addr = self.connection.recvmsg(
                    65536, socket.CMSG_SPACE(MAX_FDS * 4)
                )
                self.fds: list[int] = []
                for level, kind, payload in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds = array.array("i")
                        fds.frombytes(payload[: len(payload) - len(payload) % 4])
                        self.fds += list(fds)
                self.rfile = io.BufferedReader(_FirstChunk(data, self.connection))

            def _reply(self, status: int, body: Any = None) -> None:
                data = (
                    b""
                    if body is None
                    else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
                )
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                if data and not isinstance(body, str):
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                endpoint = self.path.removeprefix("/api/v1/")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fds, self.fds = self.fds, []
                double.requests.append((method, endpoint, body))
                try:
                    if endpoint in double.fail:
                        status, text = double.fail[endpoint]
                        self._reply(status, text)
                        return
                    status, answer = double.answer(method, endpoint, body, fds)
                finally:
                    for fd in fds:
                        if fd not in double._held:
                            os.close(fd)
                self._reply(status, answer)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_PUT(self) -> None:
                self._handle("PUT")

        self.server = _UnixHTTPServer(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CHDouble:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.path.unlink(missing_ok=True)
        for fd in self._held:
            os.close(fd)
        self._held = []

    def _event(self, source: str, event: str) -> None:
        """One event-monitor record, in CH's format: pretty JSON, then a blank line."""
        if self.events is None:
            return
        t = time.monotonic() - self._started
        record = {
            "timestamp": {"secs": int(t), "nanos": int((t % 1) * 1e9)},
            "source": source,
            "event": event,
            "properties": None,
        }
        with self.events.open("a") as f:
            f.write(json.dumps(record, indent=2) + "\n\n")

    def _exit(self) -> None:
        """What CH does on guest poweroff and vmm.shutdown, then exits (process mode)."""
        if self.state in ("Running", "Paused"):
            self._event("vm", "shutdown")
        if self.state is not None:
            self._event("vm", "deleted")
        self._event("vmm", "shutdown")
        self.state = "Shutdown" if self.state is not None else None
        if self.on_exit is not None:
            self.on_exit()

    def _open_tap_by_name(self, name: str) -> str | None:
        """CH with `tap=NAME`: attach to that TAP itself. Returns CH's error text on failure."""
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        except OSError as exc:
            os.close(fd)
            return (
                f"Error creating VM: Open tap device failed: {exc.strerror} (os error {exc.errno})"
            )
        self._held.append(fd)
        return None

    def bodies(self, endpoint: str) -> list[Any]:
        return [b for _m, e, b in self.requests if e == endpoint]

    def answer(self, method: str, endpoint: str, body: Any, fds: list[int]) -> tuple[int, Any]:
        if endpoint == "vmm.ping":
            return 200, {"version": "v48.0-double", "pid": os.getpid(), "features": []}
        if endpoint == "vmm.shutdown":
            self._exit()
            return 204, None
        if endpoint == "vm.create":
            if self.state is not None:
                return 400, "VM already created"
            self.state, self.config = "Created", body
            return 204, None
        if endpoint == "vm.restore":
            if self.state is not None:
                return 404, "VM already created"
            source = Path(str(body["source_url"]).removeprefix("file://"))
            try:
                config = json.loads((source / "config.json").read_text())
                (source / "state.json").read_text()
            except (OSError, ValueError) as exc:
                return 500, f"Error restoring VM: {exc}"
            for net in config.get("net") or []:
                if net.get("tap") and (err := self._open_tap_by_name(net["tap"])):
                    return 500, err
            self.config = config
            self._event("vm", "restoring")
            self._event("vm", "restored")
            self.state = "Running" if body.get("resume") else "Paused"
            return 204, None
        if endpoint == "vm.receive-migration":
            self.state = "Running"
            return 204, None
        if self.state is None:
            return 404, "VmNotCreated"
        transitions = {
            "vm.boot": ({"Created"}, "Running"),
            "vm.pause": ({"Running"}, "Paused"),
            "vm.resume": ({"Paused"}, "Running"),
            "vm.shutdown": ({"Running", "Paused"}, "Shutdown"),
            "vm.reboot": ({"Running"}, "Running"),
            "vm.power-button": ({"Running"}, "Running"),
            "vm.snapshot": ({"Paused"}, "Paused"),
            "vm.send-migration": ({"Running"}, "Shutdown"),
        }
        if endpoint == "vm.info":
            return 200, {"config": self.config, "state": self.state}
        if endpoint == "vm.counters":
            return 200, {"_disk0": {"read_bytes": 4096, "write_bytes": 0}}
        if endpoint == "vm.resize":
            return (204, None) if self.state == "Running" else (405, "VmNotRunning")
        if endpoint in ("vm.add-disk", "vm.add-net", "vm.add-fs"):
            return self._add_device(endpoint, body, fds)
        if endpoint == "vm.remove-device":
            if self.state != "Running":
                return 405, "VmNotRunning"
            assert self.config is not None
            for key in ("disks", "net", "fs"):
                items = self.config.get(key) or []
                self.config[key] = [d for d in items if d.get("id") != body["id"]]
            return 204, None
        if endpoint in transitions:
            allowed, after = transitions[endpoint]
            if self.state not in allowed:
                return 405, f"InvalidStateTransition({self.state}, {endpoint})"
            if endpoint == "vm.boot":
                assert self.config is not None
                for net in self.config.get("net") or []:
                    if net.get("tap") and (err := self._open_tap_by_name(net["tap"])):
                        return 500, err.replace("creating", "booting")
                serial = self.config.get("serial", {}).get("file")
                if serial:  # what the tiny guest would print
                    Path(serial).write_text("booting\nVMKIT_READY -\n")
                self._event("vm", "booting")
                self._event("vm", "booted")
            if endpoint == "vm.reboot":
                self._event("vm", "rebooting")
                self._event("vm", "rebooted")
            if endpoint == "vm.power-button" and not self.ignore_power_button:
                self.state = "Running"
                self._exit()  # the guest powers off and CH exits with it
                return 204, None
            if endpoint == "vm.shutdown":
                self._event("vm", "shutdown")
            if endpoint == "vm.snapshot":
                dest = Path(str(body["destination_url"]).removeprefix("file://"))
                (dest / "config.json").write_text(json.dumps(self.config))
                (dest / "state.json").write_text('{"double": true}')
                (dest / "memory-ranges").write_bytes(b"\0" * 4096)
            self.state = after
            return 204, None
        return 404, f"no such endpoint {endpoint}"

    def _add_device(self, endpoint: str, body: Any, fds: list[int]) -> tuple[int, Any]:
        if endpoint == "vm.add-net":
            for fd in fds:
                try:
                    self.received_taps.append(tap_name_of(fd))
                except OSError as exc:
                    return 500, f"Error adding device: fd {fd} is not a TAP: {exc}"
                self._held.append(fd)
            if fds:
                body = {**body, "fds": fds}
            elif body.get("tap") and (err := self._open_tap_by_name(body["tap"])):
                return 500, err.replace("creating VM", "adding device")
        key = {"vm.add-disk": "disks", "vm.add-net": "net", "vm.add-fs": "fs"}[endpoint]
        assert self.config is not None
        self.config.setdefault(key, []).append(body)
        if self.state == "Created":
            return 204, None  # cold-added: created with the VM at boot
        if self.state != "Running":
            return 405, "VmNotRunning"
        return 200, {"id": body.get("id"), "bdf": "0000:00:06.0"}


def main(argv: list[str]) -> int:
    """Process mode: run as a fake `cloud-hypervisor --api-socket path=X --event-monitor
    path=Y` (put on PATH by tests). CH_DOUBLE=ignore-power makes the guest deaf to the
    power button; CH_DOUBLE=ignore-sigterm makes the process survive SIGTERM;
    CH_DOUBLE=fail-create answers vm.create with CH's 500 and its error text;
    CH_DOUBLE_RECORD=FILE appends each request and the config it left, as JSON lines."""
    import signal

    opts = dict(zip(argv[::2], argv[1::2], strict=False))
    api = Path(opts["--api-socket"].removeprefix("path="))
    switches = set(os.environ.get("CH_DOUBLE", "").split(","))
    if "ignore-sigterm" in switches:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    api.unlink(missing_ok=True)
    double = CHDouble(api)
    double.ignore_power_button = "ignore-power" in switches
    if "fail-create" in switches:
        double.fail["vm.create"] = (500, "Error creating VM: Cannot open kernel (os error 2)")
    if "--event-monitor" in opts:
        double.events = Path(opts["--event-monitor"].removeprefix("path="))
        double._event("vmm", "starting")
    record = os.environ.get("CH_DOUBLE_RECORD")
    if record:
        answer = double.answer

        def recording(method: str, endpoint: str, body: Any, fds: list[int]) -> Any:
            out = answer(method, endpoint, body, fds)
            with open(record, "a") as f:
                line = {
                    "endpoint": endpoint,
                    "body": body,
                    "status": out[0],
                    "config": double.config,
                    "taps": double.received_taps,
                }
                f.write(json.dumps(line) + "\n")
            return out

        double.answer = recording  # type: ignore[method-assign]
    done = threading.Event()
    double.on_exit = done.set
    with double:
        while not done.is_set():
            time.sleep(0.02)
        time.sleep(0.05)  # let the answer go out
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
