"""Published ports for NICs whose VMM forwards none (vfkit's NAT, TAP NICs): one helper
process per VM listens on the host ports and relays each TCP connection to the guest's
address, asked of vmkit at connect time (the readiness line's IP, or vfkit's DHCP lease),
so a guest that got a new address is still reached. TCP only; QEMU's user network forwards
UDP itself.

    python -m vmkit.net.portfwd --home HOME --vm NAME --ready FILE --map 127.0.0.1:8080:80 ...
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit.errors import NotSupported

if TYPE_CHECKING:
    from vmkit.drivers.base import Driver
    from vmkit.spec import MachineSpec

CONNECT_TIMEOUT = 5.0
IP_TTL = 1.0  # seconds a looked-up guest address is reused
CHUNK = 1 << 16


def proxied(spec_json: dict[str, Any], driver: Driver) -> list[tuple[str, int, int]]:
    """(host_ip, host_port, guest_port) of every publish the VMM does not forward itself."""
    from vmkit.spec import parse_publish

    out = []
    for net in spec_json.get("networks", []):
        if driver.forwards_ports(net):
            continue
        for item in net.get("publish", []):
            host_ip, host, guest, _proto = parse_publish(item)
            out.append((host_ip, host, guest))
    return out


def check(spec: MachineSpec, driver: Driver) -> None:
    """Before anything is made: what the helper cannot forward is refused by field."""
    from vmkit.spec import parse_publish

    for i, net in enumerate(spec.networks):
        if not net.publish or driver.forwards_ports(net.to_json()):
            continue
        if net.mode == "switch":
            raise NotSupported(
                f"networks[{i}].publish: a switch NIC is not reachable from the host"
            )
        for item in net.publish:
            if parse_publish(item)[3] != "tcp":
                raise NotSupported(
                    f"networks[{i}].publish {item!r}: the {driver.name} driver forwards TCP "
                    "only (through vmkit's relay); UDP needs QEMU's user network"
                )


GuestIp = Callable[[Path, str], "str | None"]


class Relay:
    def __init__(self, home: Path, vm: str, lookup: GuestIp):
        self.home, self.vm, self.lookup = home, vm, lookup
        self._ip: tuple[float, str | None] = (0.0, None)

    def guest_ip(self) -> str | None:
        at, ip = self._ip
        if time.monotonic() - at < IP_TTL:
            return ip
        ip = self.lookup(self.home, self.vm)
        self._ip = (time.monotonic(), ip)
        return ip

    def handle(self, client: socket.socket, guest_port: int) -> None:
        ip = self.guest_ip()
        try:
            if ip is None:
                raise OSError("the guest has no known address yet")
            upstream = socket.create_connection((ip, guest_port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            print(f"vmkit portfwd: {self.vm} port {guest_port}: {exc}", file=sys.stderr)
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


class VmmWatch:
    """Ends the relay once the VM's VMM is gone (a crash, or a guest poweroff nobody has
    looked at yet), so the host port is not held for nothing. The relay starts after the
    launch record, which has no pid: any pid recorded later is this launch's VMM."""

    def __init__(self, home: Path, vm: str, every: float = 2.0):
        self.home, self.vm, self.every = home, vm, every
        self.next = 0.0

    def gone(self) -> bool:
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + self.every
        from vmkit.process import ProcessRef
        from vmkit.store import Store

        try:
            rt = Store(self.home).load_runtime(self.vm)
            if "pid" not in rt:
                return False  # still launching
            return not ProcessRef(int(rt["pid"]), float(rt["create_time"])).alive()
        except Exception:
            return False


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            src.close()


def serve(
    home: Path, vm: str, maps: list[tuple[str, int, int]], ready: Path, lookup: GuestIp
) -> None:
    relay = Relay(home, vm, lookup)
    sel = selectors.DefaultSelector()
    for host_ip, host_port, guest_port in maps:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((host_ip, host_port))
        lsock.listen(64)
        sel.register(lsock, selectors.EVENT_READ, guest_port)
    ready.write_text(f"{os.getpid()}\n")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    watch = VmmWatch(home, vm)
    while not stop.is_set() and not watch.gone():
        for key, _ in sel.select(timeout=0.5):
            listener = key.fileobj
            assert isinstance(listener, socket.socket)
            with contextlib.suppress(OSError):
                client, _addr = listener.accept()
                args = (client, int(key.data))
                threading.Thread(target=relay.handle, args=args, daemon=True).start()


def main(argv: list[str], lookup: GuestIp) -> int:
    """The relay process (started as `python -m vmkit.machine.relay`, which gives `lookup`:
    the guest's current address from the VM's status)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m vmkit.machine.relay", description=__doc__)
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--vm", required=True)
    ap.add_argument("--ready", required=True, type=Path)
    ap.add_argument("--map", action="append", required=True, help="HOST_IP:HOST_PORT:GUEST_PORT")
    args = ap.parse_args(argv)
    maps = []
    for item in args.map:
        host_ip, host, guest = item.rsplit(":", 2)
        maps.append((host_ip, int(host), int(guest)))
    serve(args.home, args.vm, maps, args.ready, lookup)
    return 0
