"""vmkit's userspace L2 learning switch: one helper process per switch.

Every VM NIC on the switch is a Unix datagram socket the VMM binds (QEMU `-netdev dgram`,
vfkit `unixSocketPath`); it sends each Ethernet frame to the switch's socket, and the switch
knows the port by the sender's address. vfkit (and krunkit with vfkitMagic=on) first sends
the 4 bytes `VFKT`: that makes its port known at once, before the guest sends a frame.
Frames to a learned MAC go to its port; broadcast, multicast and unknown destinations are
flooded to every other port. MACs age out after
`AGE` seconds; a port whose socket is gone is dropped. Counters go to `stats.json` once a
second. No root needed, nothing leaves the host.

    python -m vmkit.net.switch --socket DIR/sock --stats DIR/stats.json --leases DIR/leases
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

AGE = 300.0
HOUSEKEEPING = 1.0
MAX_FRAME = 65536
VFKIT_MAGIC = b"VFKT"  # vfkit's hello on a unixSocketPath NIC (pkg/vf/virtionet.go)
_GONE = {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTCONN}


class Port:
    __slots__ = ("drops", "path", "rx_bytes", "rx_frames", "seen", "tx_bytes", "tx_frames")

    def __init__(self, path: str, now: float):
        self.path = path
        self.rx_frames = self.rx_bytes = self.tx_frames = self.tx_bytes = self.drops = 0
        self.seen = now

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


class Switch:
    def __init__(self, sock: socket.socket, leases: Path | None = None):
        self.sock = sock
        self.leases = leases
        self.leases_mtime = -1.0
        self.members: set[str] = set()  # ports announced by vmkit, kept while leased
        self.ports: dict[str, Port] = {}
        self.macs: dict[bytes, str] = {}  # learned MAC -> port
        self.macs_seen: dict[bytes, float] = {}  # when each MAC last sent (housekeeping)
        self.fresh: set[bytes] = set()  # MACs that sent since the last housekeeping
        self.flooded = 0
        self.dirty = True

    def handle(self, frame: bytes, peer: str, now: float) -> None:
        """Forward one frame (the hot path: no allocation beyond what recvfrom made)."""
        port = self.ports.get(peer)
        if port is None:
            port = self.ports[peer] = Port(peer, now)
        port.rx_frames += 1
        port.rx_bytes += len(frame)
        self.dirty = True
        if len(frame) < 14:
            if frame != VFKIT_MAGIC:
                port.drops += 1
            return
        if not frame[6] & 1:
            src = frame[6:12]
            if self.macs.get(src) != peer:
                self.macs[src] = peer
            self.fresh.add(src)
        if not frame[0] & 1:
            out = self.macs.get(frame[0:6])
            if out is not None:
                if out != peer:
                    self.send(frame, out)
                return
        self.flooded += 1
        self.refresh_members(now)
        for path in list(self.ports):
            if path != peer:
                self.send(frame, path)

    def send(self, frame: bytes, path: str) -> None:
        port = self.ports.get(path)
        try:
            self.sock.sendto(frame, path)
        except BlockingIOError:
            if port is not None:
                port.drops += 1
            return
        except OSError as exc:
            if exc.errno in _GONE:
                if path in self.members:  # its VMM has not bound it yet (or is restarting)
                    if port is not None:
                        port.drops += 1
                else:
                    self.drop_port(path)
                return
            raise
        if port is not None:
            port.tx_frames += 1
            port.tx_bytes += len(frame)

    def drop_port(self, path: str) -> None:
        self.ports.pop(path, None)
        for mac in [m for m, p in self.macs.items() if p == path]:
            del self.macs[mac]
            self.macs_seen.pop(mac, None)
        self.dirty = True

    def refresh_members(self, now: float) -> None:
        """Ports named in the lease files vmkit writes when a VM joins (read on change)."""
        if self.leases is None:
            return
        try:
            mtime = self.leases.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self.leases_mtime:
            return
        self.leases_mtime = mtime
        members: set[str] = set()
        for lease in self.leases.iterdir():
            with contextlib.suppress(OSError, ValueError, AttributeError):
                members.update(str(p) for p in json.loads(lease.read_text()).get("ports", []))
        for path in members - self.members:
            self.ports.setdefault(path, Port(path, now))
        for path in self.members - members:
            self.drop_port(path)
        self.members = members
        self.dirty = True

    def age(self, now: float) -> None:
        self.refresh_members(now)
        for mac in self.fresh:
            self.macs_seen[mac] = now
        self.fresh.clear()
        for mac in [m for m in self.macs if now - self.macs_seen.get(m, now) > AGE]:
            del self.macs[mac]
            self.macs_seen.pop(mac, None)
            self.dirty = True
        for path in [p for p in self.ports if p not in self.members and not os.path.exists(p)]:
            self.drop_port(path)

    def stats(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "ports": {p.path: p.to_json() for p in self.ports.values()},
            "macs": {":".join(f"{b:02x}" for b in m): p for m, p in self.macs.items()},
            "flooded": self.flooded,
            "at": time.time(),
        }


def write_stats(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def serve(sock_path: Path, stats_path: Path, leases: Path | None = None) -> None:
    sock_path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(sock_path))
    finally:
        os.umask(old_umask)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setblocking(False)  # never wait on a slow port while forwarding
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    switch = Switch(sock, leases)
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    next_house = time.monotonic() + HOUSEKEEPING
    recvfrom = sock.recvfrom
    try:
        while not stop:
            try:
                frame, peer = recvfrom(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                now = time.monotonic()
                if now >= next_house:
                    switch.age(now)
                    if switch.dirty:
                        write_stats(stats_path, switch.stats())
                        switch.dirty = False
                    next_house = now + HOUSEKEEPING
                poller.poll(max(1, int((next_house - now) * 1000)))
                continue
            if peer:
                switch.handle(frame, peer, next_house)
    finally:
        with contextlib.suppress(OSError):
            sock.close()
        sock_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vmkit.net.switch", description=__doc__)
    ap.add_argument("--socket", required=True, type=Path)
    ap.add_argument("--stats", required=True, type=Path)
    ap.add_argument("--leases", type=Path, help="dir of lease files naming member ports")
    args = ap.parse_args(argv)
    serve(args.socket, args.stats, args.leases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
