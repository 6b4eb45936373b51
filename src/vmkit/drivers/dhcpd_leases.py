"""macOS's vmnet DHCP leases (`/var/db/dhcpd_leases`): a guest's IP by its MAC.

vfkit has no API for the guest's address; with `virtio-net,nat` macOS's bootpd hands it
out and records it here. The file is a list of brace blocks of key=value lines:

    {
            name=guest
            ip_address=192.168.64.3
            hw_address=1,52:54:0:ab:c:1
            identifier=1,52:54:0:ab:c:1
            lease=0x6740f1a2
    }

bootpd drops leading zeros of each MAC octet, so MACs are compared octet by octet.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

LEASES_PATH = Path("/var/db/dhcpd_leases")


@dataclass(frozen=True)
class Lease:
    name: str | None
    ip: str
    mac: tuple[int, ...]
    expires: int  # the `lease` field: a Unix time, in hex


def normalize_mac(text: str) -> tuple[int, ...] | None:
    """`52:54:0:ab:c:1` and `52:54:00:ab:0c:01` -> the same six octets; None if not a MAC."""
    parts = text.strip().split(":")
    if len(parts) != 6:
        return None
    try:
        octets = tuple(int(p, 16) for p in parts)
    except ValueError:
        return None
    if any(not 0 <= o <= 255 or not 1 <= len(p) <= 2 for o, p in zip(octets, parts, strict=True)):
        return None
    return octets


def parse(text: str) -> list[Lease]:
    """Every well-formed lease block; malformed ones are skipped, never fatal."""
    leases: list[Lease] = []
    block: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line == "{":
            block = {}
        elif line == "}":
            if block is not None:
                lease = _lease(block)
                if lease is not None:
                    leases.append(lease)
            block = None
        elif block is not None and "=" in line:
            key, _, value = line.partition("=")
            block[key.strip()] = value.strip()
    return leases


def _lease(block: dict[str, str]) -> Lease | None:
    hw = block.get("hw_address", "")
    _, _, mac_text = hw.partition(",")  # "1," is the hardware type (Ethernet)
    mac = normalize_mac(mac_text or hw)
    try:
        ip = str(ipaddress.ip_address(block.get("ip_address", "")))
    except ValueError:
        return None
    if mac is None:
        return None
    try:
        expires = int(block.get("lease", "0"), 16)
    except ValueError:
        expires = 0
    return Lease(block.get("name"), ip, mac, expires)


def leases_path() -> Path:
    """macOS's file, or $VMKIT_DHCPD_LEASES (tests, and hosts whose bootpd writes elsewhere)."""
    return Path(os.environ.get("VMKIT_DHCPD_LEASES") or LEASES_PATH)


def ip_for_mac(mac: str, path: Path | None = None) -> str | None:
    """The IP of the newest lease for `mac`, or None (no file, no lease)."""
    lease = lease_for_mac(mac, path)
    return None if lease is None else lease.ip


def lease_for_mac(mac: str, path: Path | None = None) -> Lease | None:
    """The newest lease for `mac` (latest expiry), or None (no file, no lease)."""
    path = path or leases_path()
    wanted = normalize_mac(mac)
    if wanted is None:
        return None
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    matches = [lease for lease in parse(text) if lease.mac == wanted]
    if not matches:
        return None
    return max(matches, key=lambda lease: lease.expires)
