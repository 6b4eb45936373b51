"""TEST DOUBLE — a scripted stand-in for Cloud Hypervisor's REST API on a Unix socket.

It answers the endpoints vmkit uses with the status codes of the real OpenAPI spec
(204 on success, 404 when no VM is created, 405 when the VM is in the wrong state, 500 with
a text body on failure) and records every request. It boots nothing: tests that use it
check what vmkit *sends* and how it reads the answers, never that a VM works — the
Cloud Hypervisor column of docs/capabilities.md says "contract-tested" for that reason.
"""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any


class _UnixHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_UNIX
    daemon_threads = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", 0


class CHDouble:
    def __init__(self, path: Path):
        self.path = path
        self.state: str | None = None  # None: no VM created
        self.config: dict[str, Any] | None = None
        self.requests: list[tuple[str, str, Any]] = []
        self.ignore_power_button = False
        self.fail: dict[str, tuple[int, str]] = {}  # endpoint -> (status, text)
        self.on_exit: Any = None  # called when the real CH would exit (process mode)
        self.events: Path | None = None
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

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
                double.requests.append((method, endpoint, body))
                if endpoint in double.fail:
                    status, text = double.fail[endpoint]
                    self._reply(status, text)
                    return
                status, answer = double.answer(method, endpoint, body)
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

    def _event(self, source: str, event: str) -> None:
        if self.events is not None:
            with self.events.open("a") as f:
                f.write(json.dumps({"source": source, "event": event, "properties": None}) + "\n")

    def bodies(self, endpoint: str) -> list[Any]:
        return [b for _m, e, b in self.requests if e == endpoint]

    def answer(self, method: str, endpoint: str, body: Any) -> tuple[int, Any]:
        if endpoint == "vmm.ping":
            return 200, {"version": "v48.0-double", "pid": 1, "features": []}
        if endpoint == "vmm.shutdown":
            self._event("vmm", "shutdown")
            if self.on_exit is not None:
                self.on_exit()
            return 204, None
        if endpoint == "vm.create":
            if self.state is not None:
                return 400, "VM already created"
            self.state, self.config = "Created", body
            return 204, None
        if endpoint == "vm.restore":
            if self.state is not None:
                return 404, "VM already created"
            self.state, self.config = "Paused", {"payload": {"kernel": "restored"}}
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
            if self.state != "Running":
                return 405, "VmNotRunning"
            return 200, {"id": body.get("id"), "bdf": "0000:00:06.0"}
        if endpoint == "vm.remove-device":
            return (204, None) if self.state == "Running" else (405, "VmNotRunning")
        if endpoint in transitions:
            allowed, after = transitions[endpoint]
            if self.state not in allowed:
                return 405, f"InvalidStateTransition({self.state}, {endpoint})"
            if endpoint == "vm.power-button" and not self.ignore_power_button:
                after = "Shutdown"
                self._event("vm", "shutdown")
                if self.on_exit is not None:  # CH exits when the guest powers off
                    self.on_exit()
            if endpoint == "vm.boot" and self.config is not None:
                serial = self.config.get("serial", {}).get("file")
                if serial:  # what the tiny guest would print
                    Path(serial).write_text("booting\nVMKIT_READY -\n")
            if endpoint == "vm.snapshot":
                dest = Path(str(body["destination_url"]).removeprefix("file://"))
                for name in ("config.json", "state.json", "memory-ranges"):
                    (dest / name).write_text(name)
            self.state = after
            return 204, None
        return 404, f"no such endpoint {endpoint}"


def main(argv: list[str]) -> int:
    """Process mode: run as a fake `cloud-hypervisor --api-socket path=X --event-monitor
    path=Y` (put on PATH by tests). CH_DOUBLE=ignore-power makes the guest deaf to the
    power button; CH_DOUBLE=ignore-sigterm makes the process survive SIGTERM."""
    import os
    import signal
    import time

    opts = dict(zip(argv[::2], argv[1::2], strict=False))
    api = Path(opts["--api-socket"].removeprefix("path="))
    switches = set(os.environ.get("CH_DOUBLE", "").split(","))
    if "ignore-sigterm" in switches:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    api.unlink(missing_ok=True)
    double = CHDouble(api)
    double.ignore_power_button = "ignore-power" in switches
    if "--event-monitor" in opts:
        double.events = Path(opts["--event-monitor"].removeprefix("path="))
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
