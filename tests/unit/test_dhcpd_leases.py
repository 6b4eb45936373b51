"""macOS's /var/db/dhcpd_leases parser, on a fixture in bootpd's format (leading zeros of MAC
octets dropped, hex lease times, several leases per MAC)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmkit.drivers import dhcpd_leases
from vmkit.drivers.vfkit import VfkitDriver
from vmkit.spec import spec_from_dict

FIXTURE = Path(__file__).parent / "fixtures" / "dhcpd_leases"


def test_parse_keeps_well_formed_leases_only() -> None:
    leases = dhcpd_leases.parse(FIXTURE.read_text())
    assert [(lease.name, lease.ip) for lease in leases] == [
        ("old-guest", "192.168.64.2"),
        ("guest", "192.168.64.7"),
        ("other", "192.168.64.3"),
        ("ipv6ish", "fd00::5"),
    ]
    assert leases[1].mac == (0x52, 0x54, 0, 0x12, 0x34, 0x56)
    assert leases[1].expires == 0x6740F1A2
    assert leases[3].expires == 0  # unreadable lease time: kept, oldest


@pytest.mark.parametrize(
    ("mac", "ip"),
    [
        ("52:54:00:12:34:56", "192.168.64.7"),  # the newest of two leases
        ("52:54:0:12:34:56", "192.168.64.7"),
        ("0a:0b:0c:0d:0e:0f", "192.168.64.3"),
        ("52:54:00:aa:bb:cc", None),  # its block had no valid IP
        ("52:54:00:00:00:99", None),
        ("not a mac", None),
    ],
)
def test_ip_for_mac(mac: str, ip: str | None) -> None:
    assert dhcpd_leases.ip_for_mac(mac, FIXTURE) == ip


def test_a_missing_leases_file_is_no_ip(tmp_path: Path) -> None:
    assert dhcpd_leases.ip_for_mac("52:54:00:12:34:56", tmp_path / "none") is None


@pytest.mark.parametrize("text", ["52:54:0:12:34", "52:54:0:12:34:567", "52:54:0:12:34:zz", ""])
def test_normalize_mac_rejects_non_macs(text: str) -> None:
    assert dhcpd_leases.normalize_mac(text) is None


def test_vfkit_driver_finds_the_guest_ip_by_the_nics_mac(tmp_path: Path) -> None:
    kernel = tmp_path / "k"
    kernel.write_bytes(b"\x7fELF")
    spec = spec_from_dict(
        {
            "name": "g",
            "boot": {"kernel": str(kernel)},
            "networks": [{"mode": "user", "mac": "52:54:00:12:34:56"}],
        }
    )
    assert VfkitDriver(leases=FIXTURE).guest_ip(spec.to_json()) == "192.168.64.7"
    assert VfkitDriver(leases=FIXTURE).guest_ip({**spec.to_json(), "networks": []}) is None
