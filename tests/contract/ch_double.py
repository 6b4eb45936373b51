"""TEST DOUBLE — a scripted stand-in for Cloud Hypervisor's REST API on a Unix socket.

It answers as the real Cloud Hypervisor v54 does (checked against the binary, issue 13):
204 on success, 200 + PciDeviceInfo for a hot-plug, 204 for a cold add before boot, and
every failure as a JSON array of strings (the cause chain) with 404 when no VM is created
or a device id is unknown and 500 for a wrong state (even where the OpenAPI spec says 405).
Like real CH it accepts power-button and reboot while paused and boot after a shutdown;
refuses a duplicate device id and a qcow2 overlay without `backing_files: true`; keeps a
removed device in `device_tree` until the guest acknowledges the eject; answers
vm.send-migration with 204 and reports the outcome only in the event monitor; writes
event-monitor records as pretty-printed JSON separated by a blank line; takes TAP fds as
SCM_RIGHTS data (vm.add-net, and vm.restore's `net_fds`), and opens a TAP named in a config
by name (TUNSETIFF, EBUSY while another fd holds it).

What it is still for: what the real binary cannot show on the CI machine, whose KVM runs
no guest — a guest that boots (prints the readiness line, powers off on the button,
acknowledges an eject) and faults on demand (a vCPU error, a VMM that ignores SIGTERM, a
failing vm.create). Everything the VMM itself does is tested on the real binary
(tests/e2e/test_ch_vmm.py).
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
import sys
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
        self.vcpu_error = False  # the "guest" crashes on the power button (a vCPU error)
        self.pending: set[str] = set()  # removals the guest has not acknowledged yet
        self.ack_delay = 0.2  # how long the booted "guest" takes to acknowledge an eject
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

    @staticmethod
    def err(status: int, *causes: str) -> tuple[int, Any]:
        """A failure as real CH answers it: a JSON array, "Error from API" first."""
        return status, ["Error from API", *causes]

    def _device_tree(self) -> dict[str, Any]:
        assert self.config is not None
        ids = [
            str(d.get("id"))
            for key in ("disks", "net", "fs")
            for d in self.config.get(key) or []
            if d.get("id")
        ]
        return {i: {"id": i, "resources": [], "children": []} for i in ids}

    def _remove_later(self, device_id: str) -> None:
        """The guest acknowledges the eject a little later; only then is it gone."""
        self.pending.add(device_id)

        def ack() -> None:
            time.sleep(self.ack_delay)
            assert self.config is not None
            for key in ("disks", "net", "fs"):
                items = self.config.get(key) or []
                self.config[key] = [d for d in items if d.get("id") != device_id]
            self.pending.discard(device_id)
            self._event("vm", "device-removed")

        threading.Thread(target=ack, daemon=True).start()

    def _migrate_in_background(self) -> None:
        """CH's migration worker: the 204 came first; a double has no target to reach, so
        its worker reports failure and the VM runs on, as real CH's does."""

        def worker() -> None:
            time.sleep(0.05)
            self._event("vm", "migration-failed")
            self.state = "Running"

        self._event("vm", "migration-started")
        threading.Thread(target=worker, daemon=True).start()

    def bodies(self, endpoint: str) -> list[Any]:
        return [b for _m, e, b in self.requests if e == endpoint]

    def answer(self, method: str, endpoint: str, body: Any, fds: list[int]) -> tuple[int, Any]:
        if endpoint == "vmm.ping":
            return 200, {"version": "v54.0.0-double", "pid": os.getpid(), "features": []}
        if endpoint == "vmm.shutdown":
            self._exit()
            return 204, None
        if endpoint == "vm.create":
            if self.state is not None:
                return self.err(500, "The VM could not be created", "VM is already created")
            self.state, self.config = "Created", body
            return 204, None
        if endpoint == "vm.restore":
            return self._restore(body, fds)
        if endpoint == "vm.receive-migration":
            self.state = "Running"
            return 204, None
        if self.state is None:
            return self.err(404, f"The request {endpoint} failed", "VM is not created")
        assert self.config is not None
        if endpoint == "vm.info":
            return 200, {
                "config": self.config,
                "state": self.state,
                "device_tree": self._device_tree(),
            }
        if endpoint == "vm.counters":
            return 200, {"_disk0": {"read_bytes": 4096, "write_bytes": 0}}
        if endpoint == "vm.resize":
            if self.state not in ("Running", "Paused"):
                return self.err(500, "The VM could not be resized", "VM is not running")
            limit = int(self.config.get("cpus", {}).get("max_vcpus", 1))
            if int(body.get("desired_vcpus") or 0) > limit:
                return self.err(
                    500,
                    "The VM could not be resized",
                    "Error from CPU manager",
                    "Requested vCPUs exceed maximum",
                )
            return 204, None
        if endpoint in ("vm.add-disk", "vm.add-net", "vm.add-fs"):
            return self._add_device(endpoint, body, fds)
        if endpoint == "vm.remove-device":
            if body["id"] not in self._device_tree():
                return self.err(
                    404,
                    "The device could not be removed from the VM",
                    "Error from device manager",
                    f"Failed to find device corresponding to the given identifier: {body['id']}",
                )
            if body["id"] not in self.pending:
                self._remove_later(body["id"])
            return 204, None
        not_running = {
            "vm.boot": "VM is already booted",
            "vm.pause": "VM is not running",
            "vm.shutdown": "VM is not running",
            "vm.reboot": "VM is not running",
            "vm.power-button": "VM is not running",
            "vm.snapshot": "Trying to snapshot while VM is running",
            "vm.send-migration": "VM is not running",
        }
        allowed = {
            "vm.boot": {"Created", "Shutdown"},  # real CH boots again after a shutdown
            "vm.pause": {"Running"},
            "vm.resume": {"Paused"},
            "vm.shutdown": {"Running", "Paused"},
            "vm.reboot": {"Running", "Paused"},  # accepted while paused, as by real CH
            "vm.power-button": {"Running", "Paused"},
            "vm.snapshot": {"Paused"},
            "vm.send-migration": {"Running"},
        }
        if endpoint not in allowed:
            return self.err(404, f"no such endpoint {endpoint}")
        if self.state not in allowed[endpoint]:
            if endpoint == "vm.resume":
                why = f"Invalid transition: InvalidStateTransition({self.state}, Running)"
                return self.err(500, "The VM could not resume", why)
            return self.err(500, f"The request {endpoint} failed", not_running[endpoint])
        return self._transition(endpoint, body)

    def _transition(self, endpoint: str, body: Any) -> tuple[int, Any]:
        assert self.config is not None
        if endpoint == "vm.boot":
            for net in self.config.get("net") or []:
                if net.get("tap") and (err := self._open_tap_by_name(net["tap"])):
                    return self.err(500, "The VM could not boot", err)
            serial = self.config.get("serial", {}).get("file")
            if serial:  # what the tiny guest would print
                Path(serial).write_text("booting\nVMKIT_READY -\n")
            self._event("vm", "booting")
            self._event("vm", "booted")
            self.state = "Running"
        elif endpoint == "vm.pause":
            self.state = "Paused"
        elif endpoint == "vm.resume":
            self.state = "Running"
        elif endpoint == "vm.reboot":
            self._event("vm", "rebooting")
            self._event("vm", "rebooted")
            self.state = "Running"
        elif endpoint == "vm.power-button":
            if not self.ignore_power_button:
                if self.vcpu_error:  # what real CH logs, then the same events as a poweroff
                    print(
                        "cloud-hypervisor: 9.9s: <vcpu0> ERROR:vmm/src/cpu.rs:1487 -- VCPU "
                        "generated error: VcpuRun(Failed to run vcpu\n\nCaused by:\n    "
                        "Unexpected exit reason on vcpu run: InternalError\n",
                        file=sys.stderr,
                        flush=True,
                    )
                self.state = "Running"
                self._exit()  # the guest powers off (or crashes) and CH exits with it
        elif endpoint == "vm.shutdown":
            self._event("vm", "shutdown")
            self.state = "Shutdown"
        elif endpoint == "vm.snapshot":
            dest = Path(str(body["destination_url"]).removeprefix("file://"))
            (dest / "config.json").write_text(json.dumps(self.config))
            (dest / "state.json").write_text('{"double": true}')
            (dest / "memory-ranges").write_bytes(b"\0" * 4096)
        elif endpoint == "vm.send-migration":
            self._migrate_in_background()
        return 204, None

    def _restore(self, body: Any, fds: list[int]) -> tuple[int, Any]:
        if self.state is not None:
            return self.err(500, "The VM could not be restored", "VM is already created")
        source = Path(str(body["source_url"]).removeprefix("file://"))
        try:
            config = json.loads((source / "config.json").read_text())
            (source / "state.json").read_text()
        except (OSError, ValueError) as exc:
            return self.err(500, "The VM could not be restored", str(exc))
        given = {n["id"]: n for n in body.get("net_fds") or []}
        fds = list(fds)
        for net in config.get("net") or []:
            if net.get("id") in given:  # its TAP came as an fd (SCM_RIGHTS)
                fd = fds.pop(0)
                try:
                    self.received_taps.append(tap_name_of(fd))
                except OSError as exc:
                    return self.err(500, "The VM could not be restored", f"fd {fd}: {exc}")
                self._held.append(fd)
                net["fds"] = [fd]
            elif net.get("tap") and (err := self._open_tap_by_name(net["tap"])):
                return self.err(500, "The VM could not be restored", err)
        self.config = config
        self._event("vm", "restoring")
        self._event("vm", "restored")
        self.state = "Running" if body.get("resume") else "Paused"
        return 204, None

    def _add_device(self, endpoint: str, body: Any, fds: list[int]) -> tuple[int, Any]:
        assert self.config is not None
        what = {"vm.add-disk": "disk", "vm.add-net": "net", "vm.add-fs": "fs"}[endpoint]
        failed = f"The {what} could not be added to the VM"
        if body.get("id") in self._device_tree():
            return self.err(
                500,
                failed,
                "Error from device manager",
                f"Invalid identifier as it is not unique: {body['id']}",
            )
        overlay = body.get("image_type") == "Qcow2" and _qcow2_has_backing(Path(body["path"]))
        if endpoint == "vm.add-disk" and overlay and not body.get("backing_files"):
            return self.err(
                500, failed, "Cannot open disk path", "Maximum disk nesting depth exceeded"
            )
        if endpoint == "vm.add-net":
            for fd in fds:
                try:
                    self.received_taps.append(tap_name_of(fd))
                except OSError as exc:
                    return self.err(500, failed, f"fd {fd} is not a TAP: {exc}")
                self._held.append(fd)
            if fds:
                body = {**body, "fds": fds}
            elif body.get("tap") and (err := self._open_tap_by_name(body["tap"])):
                return self.err(500, failed, err)
        key = {"vm.add-disk": "disks", "vm.add-net": "net", "vm.add-fs": "fs"}[endpoint]
        self.config.setdefault(key, []).append(body)
        if self.state == "Created":
            return 204, None  # cold-added: created with the VM at boot
        if self.state not in ("Running", "Paused"):
            return self.err(500, failed, "VM is not running")
        return 200, {"id": body.get("id"), "bdf": "0000:00:06.0"}


def _qcow2_has_backing(path: Path) -> bool:
    """Whether a qcow2 header names a backing file (its offset field, bytes 8-16)."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head[:4] == b"QFI\xfb" and int.from_bytes(head[8:16], "big") != 0


def main(argv: list[str]) -> int:
    """Process mode: run as a fake `cloud-hypervisor --api-socket path=X --event-monitor
    path=Y` (put on PATH by tests). CH_DOUBLE=ignore-power makes the guest deaf to the
    power button; CH_DOUBLE=vcpu-error makes it crash instead (a vCPU error, as CH logs
    it); CH_DOUBLE=ignore-sigterm makes the process survive SIGTERM;
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
    double.vcpu_error = "vcpu-error" in switches
    double.ack_delay = 1.0  # well past the CLI's own look at the device after its removal
    if "fail-create" in switches:
        double.fail["vm.create"] = (
            500,
            json.dumps(["Error from API", "The VM could not be created", "Cannot open kernel"]),
        )
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
