#!/usr/bin/env python3
"""TEST DOUBLE for vfkit/krunkit (vfkit cannot run on Linux). Never evidence that a feature
works on a Mac: it only speaks vfkit's documented interface so the driver's argv, REST client
and stop escalation can be exercised here.

As a program (`vfkit_double.py ARGV...`, put on PATH as `vfkit`/`krunkit` by the tests) it:
- acts as vfkit, or as krunkit with $VFKIT_DOUBLE_FLAVOR=krunkit;
- prints `vfkit version: vX.Y.Z` for `--version` ($VFKIT_DOUBLE_VERSION, default 0.6.2 as
  vfkit, 1.0.0 as krunkit);
- refuses an argv that does not parse under the documented grammar (vfkit_grammar), exit 1;
- writes the pidfile, writes a boot banner and `VMKIT_READY -` to the virtio-serial log file
  (not for `--bootloader macos`: a macOS guest prints no such line);
- plays macOS's bootpd when $VFKIT_DOUBLE_LEASES names a file: 0.3 s after start it appends
  a lease (dhcpd_leases format, expiring in a day) for each `virtio-net,nat` MAC;
- serves vfkit's REST API on the `--restful-uri unix:///...` socket: GET /vm/state,
  POST /vm/state {Stop|HardStop|Pause|Resume} -> 202, GET /vm/inspect; in the krunkit
  flavour, krunkit's canned answers as its src/status.rs writes them (any GET: Running, any
  POST: 200 Stopping and stop; no Content-Length, a trailing NUL, then close);
- logs like vfkit (logrus text lines) to stdout, ending with `msg="VM is stopped"`;
- for each `virtio-vsock,port=P,socketURL=S,connect`, listens on S as vfkit's connectVsock
  does (net.ListenUnix: an existing file is a fatal error) and plays the guest's port P: each
  connection is relayed to $VFKIT_DOUBLE_VSOCK_GUEST (`HOST:PORT`, a TCP server the test
  runs), or closed at once when it is unset (nothing listens on the guest's port).

Behaviour switches, comma-separated in $VFKIT_DOUBLE: `ignore-stop` (the guest ignores the
Stop request), `refuse-hardstop` (HardStop answers 500), `ignore-sigterm`, `no-ready`,
`poweroff-after-ready` (the guest powers itself off once ready), `crash-after-ready`
(virtualization error, exit 1), `no-lease` (no DHCP lease is granted).

As a module, `DoubleServer` runs the same REST API in a thread for client tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socketserver
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vfkit_grammar import GrammarError, parse_argv

PREFIX = "VirtualMachineState"


class VM:
    """The guest as vfkit sees it: a state and what each request does to it."""

    def __init__(self, behaviour: set[str], flavor: str, config: dict[str, Any]):
        self.state = "Running"
        self.behaviour = behaviour
        self.flavor = flavor
        self.config = config
        self.stopped = threading.Event()
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def state_json(self) -> dict[str, Any]:
        s = self.state
        return {
            "state": PREFIX + s,
            "canStart": s == "Stopped",
            "canPause": s == "Running",
            "canResume": s == "Paused",
            "canStop": s in ("Running", "Paused"),
            "canHardStop": s != "Stopped" and "refuse-hardstop" not in self.behaviour,
        }

    def request(self, what: str) -> tuple[int, str]:
        with self.lock:
            self.requests.append(what)
            if self.flavor == "krunkit" and what != "Stop":
                return 404, "not found"
            if what == "Stop":
                if self.state not in ("Running", "Paused"):
                    return 500, f"cannot stop a VM in state {self.state}"
                if "ignore-stop" not in self.behaviour:
                    self._stop()
                return 202, ""
            if what == "HardStop":
                if "refuse-hardstop" in self.behaviour:
                    return 500, "Invalid virtual machine state transition"
                self._stop()
                return 202, ""
            if what == "Pause":
                if self.state != "Running":
                    return 500, "Invalid virtual machine state transition"
                self.state = "Paused"
                return 202, ""
            if what == "Resume":
                if self.state != "Paused":
                    return 500, "Invalid virtual machine state transition"
                self.state = "Running"
                return 202, ""
            return 400, f"invalid state request {what!r}"

    def _stop(self) -> None:
        self.state = "Stopped"
        self.stopped.set()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    vm: VM


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def address_string(self) -> str:
        return "unix"

    def _send(self, code: int, body: Any = None) -> None:
        raw = (
            b""
            if body is None
            else (json.dumps(body) if not isinstance(body, str) else body).encode()
        )
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        vm = self.server.vm
        if self.path == "/vm/state":
            self._send(200, vm.state_json())
        elif self.path == "/vm/inspect" and vm.flavor == "vfkit":
            self._send(200, vm.config)
        else:
            self._send(404, "404 page not found")

    def do_POST(self) -> None:
        vm = self.server.vm
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, "bad json")
            return
        if self.path != "/vm/state":
            self._send(404, "404 page not found")
            return
        code, msg = vm.request(str(body.get("state")))
        self._send(code, msg or None)


# krunkit's REST "server" (src/status.rs): one read of the request, then a canned answer
# with no Content-Length and a trailing NUL, then close. Any POST stops the VM (200, not
# 202); any GET says Running.
KRUNKIT_RUNNING = (
    b"HTTP/1.1 200 OK\r\nContent-type: application/json\r\n\r\n"
    b'{"state": "VirtualMachineStateRunning"}\0'
)
KRUNKIT_STOPPING = (
    b"HTTP/1.1 200 OK\r\nContent-type: application/json\r\n\r\n"
    b'{"state": "VirtualMachineStateStopping"}\0'
)


class _KrunkitHandler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        data = self.request.recv(4096)
        if b"POST" in data:
            self.request.sendall(KRUNKIT_STOPPING)
            self.server.vm.request("Stop")
        else:
            self.request.sendall(KRUNKIT_RUNNING)


class DoubleServer:
    """The REST API alone, in a thread, on `socket_path`."""

    def __init__(
        self,
        socket_path: Path,
        behaviour: set[str] | None = None,
        flavor: str = "vfkit",
        config: dict[str, Any] | None = None,
    ):
        self.vm = VM(behaviour or set(), flavor, config or {"vcpus": 1, "memoryBytes": 1 << 29})
        handler = _KrunkitHandler if flavor == "krunkit" else _Handler
        self.server = _Server(str(socket_path), handler)
        self.server.vm = self.vm
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> DoubleServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _VsockHandler(socketserver.BaseRequestHandler):
    """One host connection to a `connect` vsock socket: the guest's port, as the test says."""

    def handle(self) -> None:
        import socket as sockmod

        guest = os.environ.get("VFKIT_DOUBLE_VSOCK_GUEST")
        if not guest:
            return  # vfkit's dial to the guest port fails: the host connection just closes
        host, port = guest.rsplit(":", 1)
        with sockmod.create_connection((host, int(port))) as up:
            pipe(self.request, up)


def pipe(a: Any, b: Any) -> None:
    """Copy both ways; an end that closes is passed on as a half-close, until both did."""
    import select
    import socket as sockmod

    open_ = [a, b]
    while open_:
        ready, _, _ = select.select(open_, [], [])
        for src in ready:
            dst = b if src is a else a
            try:
                data = src.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                dst.sendall(data)
            else:
                open_.remove(src)
                with contextlib.suppress(OSError):
                    dst.shutdown(sockmod.SHUT_WR)


def vsock_listeners(devices: list[Any]) -> list[socketserver.UnixStreamServer]:
    out = []
    for dev in devices:
        if dev.kind == "virtio-vsock" and dev.has("connect"):
            path = dev.get("socketURL")
            if os.path.exists(path):
                raise OSError(f"listen unix {path}: bind: address already in use")
            server = socketserver.ThreadingUnixStreamServer(path, _VsockHandler)
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            out.append(server)
    return out


def log(msg: str, level: str = "info") -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f'time="{stamp}" level={level} msg="{msg}"', flush=True)


def lease_ip(n: int) -> str:
    """192.168.64.(10+n), or $VFKIT_DOUBLE_LEASE_IP (tests reach a host-side stand-in)."""
    return os.environ.get("VFKIT_DOUBLE_LEASE_IP") or f"192.168.64.{10 + n}"


def grant_leases(path: Path, macs: list[str | None]) -> None:
    """Append a lease per MAC as bootpd writes them (leading zeros of octets dropped)."""
    with path.open("a") as f:
        for n, mac in enumerate(m for m in macs if m):
            short = ":".join(f"{int(o, 16):x}" for o in mac.split(":"))
            f.write(
                f"{{\n\tname=mac-guest\n\tip_address={lease_ip(n)}\n"
                f"\thw_address=1,{short}\n\tidentifier=1,{short}\n"
                f"\tlease={int(time.time()) + 86400:#x}\n}}\n"
            )


def disk_problem(devices: list[Any], flavor: str) -> str | None:
    """What vfkit checks of disk images at start: they exist, and (vfkit) are not qcow2."""
    for dev in devices:
        if dev.kind not in ("virtio-blk", "usb-mass-storage", "nvme"):
            continue
        path = Path(dev.get("path") or "")
        try:
            head = path.open("rb").read(4)
        except OSError as exc:
            return f"cannot open disk image {path}: {exc.strerror}"
        if head == b"QFI\xfb" and (flavor == "vfkit" or dev.get("format") != "qcow2"):
            return f"{path}: qcow2 disk images are not supported, use raw"
    return None


def main(argv: list[str]) -> int:
    flavor = os.environ.get("VFKIT_DOUBLE_FLAVOR", "vfkit")
    if "--version" in argv:
        default = "1.0.0" if flavor == "krunkit" else "0.6.2"
        print(f"{flavor} version: v{os.environ.get('VFKIT_DOUBLE_VERSION', default)}")
        return 0
    try:
        parsed = parse_argv(argv, flavor)
    except GrammarError as exc:
        log(f"invalid command line: {exc}", "fatal")
        return 1
    behaviour = {b for b in os.environ.get("VFKIT_DOUBLE", "").split(",") if b}
    problem = disk_problem(parsed.devices, flavor)
    if problem:
        log(problem, "fatal")
        return 1
    if parsed.pidfile:
        Path(parsed.pidfile).write_text(f"{os.getpid()}\n")
    serial = next((d.get("logFilePath") for d in parsed.devices if d.kind == "virtio-serial"), None)
    config = {
        "vcpus": parsed.cpus,
        "memoryBytes": parsed.memory << 20,
        "bootloader": {"kind": parsed.bootloader[0] if parsed.bootloader else None},
        "devices": [{"kind": d.kind, **{k: v for k, v in d.options}} for d in parsed.devices],
    }
    sock = Path(urllib.parse.unquote(parsed.restful_uri.removeprefix("unix://")))
    try:
        vsocks = vsock_listeners(parsed.devices)
    except OSError as exc:
        log(str(exc), "fatal")
        return 1
    double = DoubleServer(sock, behaviour, flavor, config)
    vm = double.vm

    def on_sigterm(signum: int, frame: object) -> None:
        if "ignore-sigterm" in behaviour:
            log("ignoring SIGTERM", "warning")
            return
        log("received SIGTERM: stopping the VM")
        vm._stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    with double:
        log("virtual machine is running")
        macos = parsed.bootloader is not None and parsed.bootloader[0] == "macos"
        if serial and "no-ready" not in behaviour and not macos:
            with open(serial, "a") as f:
                f.write("Linux version 6.1.0 (test double)\nVMKIT_READY -\n")
        leases = os.environ.get("VFKIT_DOUBLE_LEASES")
        if leases and "no-lease" not in behaviour:
            time.sleep(0.3)
            grant_leases(Path(leases), [d.get("mac") for d in parsed.devices if d.has("nat")])
        if "poweroff-after-ready" in behaviour:
            time.sleep(1.0)  # long enough for vmkit to see it ready on a loaded machine
            vm._stop()
        if "crash-after-ready" in behaviour:
            time.sleep(1.0)
            log("virtualization error: hypervisor virtualization error", "error")
            return 1
        log("waiting for VM to stop")
        while not vm.stopped.wait(0.05):
            pass
        log("VM is stopped")
    if parsed.pidfile:
        Path(parsed.pidfile).unlink(missing_ok=True)
    for server in vsocks:
        server.shutdown()
        server.server_close()
    sock.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
