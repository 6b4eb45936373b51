"""`python icmp_ping.py ADDR`: one ICMP echo with a raw socket (root); exit 0 on a reply.

The test machine has no ping binary; this runs inside a network namespace via `ip netns exec`.
"""

from __future__ import annotations

import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(addr: str, tries: int = 5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(2)
        for seq in range(tries):
            body = struct.pack("!BBHHH", 8, 0, 0, 0x766B, seq) + b"vmkit-ping"
            packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
            s.sendto(packet, (addr, 0))
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                try:
                    data, peer = s.recvfrom(1500)
                except TimeoutError:
                    break
                icmp = data[(data[0] & 0x0F) * 4 :]
                if peer[0] == addr and icmp[0] == 0 and icmp[4:6] == b"\x76\x6b":
                    return True
    return False


if __name__ == "__main__":
    sys.exit(0 if ping(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5) else 1)
