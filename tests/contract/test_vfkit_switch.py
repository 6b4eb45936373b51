"""vmkit's real switch process with vfkit's end of a `unixSocketPath` NIC, played by a named
test double: a datagram socket bound where vfkit binds it (`vfkit-<pid>-<rand>.sock` beside
the switch socket), connected to the switch, sending `VFKT` first, as pkg/vf/virtionet.go
does. vfkit cannot run here; the QEMU e2e tests prove the switch with real guests."""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmkit.net import switches
from vmkit.store import Store

BROADCAST = b"\xff" * 6


class VfkitNetEndDouble:
    """What vfkit does for `virtio-net,unixSocketPath=SWITCH`: bind beside it, connect, hello."""

    def __init__(self, switch_sock: Path):
        name = f"vfkit-{os.getpid():x}-{random.randrange(0xFFFF):x}.sock"
        self.path = switch_sock.parent / name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.connect(str(switch_sock))
        self.sock.send(b"VFKT")
        self.sock.settimeout(5.0)

    def frame(self, dst: bytes, src: bytes, payload: bytes) -> None:
        self.sock.send(dst + src + b"\x88\xb5" + payload)  # local experimental EtherType

    def receive(self) -> bytes:
        return self.sock.recv(65536)

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)  # vfkit removes its end when it exits


@pytest.fixture
def switch_sock(vmkit_env: dict[str, str]) -> Iterator[Path]:
    store = Store()
    store.ensure()
    info = switches.ensure(store, "lan", "vm-a", [])
    yield Path(info["socket"])
    switches.release(store, "lan", "vm-a")


def mac(n: int) -> bytes:
    return bytes([0x52, 0x54, 0, 0, 0, n])


def stats(switch_sock: Path, want_ports: int) -> dict[str, object]:
    deadline = time.monotonic() + 5
    while True:
        try:
            data = json.loads((switch_sock.parent / "stats.json").read_text())
            if len(data["ports"]) >= want_ports or time.monotonic() > deadline:
                return data  # type: ignore[no-any-return]
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_a_vfkit_port_is_known_from_its_hello_before_its_guest_speaks(switch_sock: Path) -> None:
    quiet, talker = VfkitNetEndDouble(switch_sock), VfkitNetEndDouble(switch_sock)
    try:
        time.sleep(0.2)  # both hellos are in; `quiet` has sent no frame
        talker.frame(BROADCAST, mac(2), b"who is there")
        assert quiet.receive().endswith(b"who is there")
        quiet.frame(mac(2), mac(1), b"me")  # unicast back, to the MAC the switch learned
        assert talker.receive().endswith(b"me")
        ports = stats(switch_sock, 2)["ports"]
        assert isinstance(ports, dict)
        mine = {str(quiet.path), str(talker.path)}
        assert mine <= set(ports)
        assert all(ports[p]["drops"] == 0 for p in mine), ports  # the hello is not a drop
    finally:
        quiet.close()
        talker.close()


def test_a_port_whose_vfkit_exited_is_forgotten(switch_sock: Path) -> None:
    gone, stays = VfkitNetEndDouble(switch_sock), VfkitNetEndDouble(switch_sock)
    try:
        time.sleep(0.2)
        assert str(gone.path) in stats(switch_sock, 2)["ports"]  # type: ignore[operator]
        gone.close()
        stays.frame(BROADCAST, mac(3), b"anyone")  # flooding to the gone port drops it
        deadline = time.monotonic() + 5
        while str(gone.path) in stats(switch_sock, 0)["ports"]:  # type: ignore[operator]
            assert time.monotonic() < deadline, "the gone port is still listed"
            time.sleep(0.2)
    finally:
        stays.close()
