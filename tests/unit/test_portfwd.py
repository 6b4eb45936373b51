"""Which published ports vmkit's relay takes, and what it refuses by field."""

from __future__ import annotations

from typing import Any

import pytest

from vmkit.drivers.cloud_hypervisor import CloudHypervisorDriver
from vmkit.drivers.qemu import QemuDriver
from vmkit.drivers.vfkit import VfkitDriver
from vmkit.errors import NotSupported, SpecError
from vmkit.net import portfwd
from vmkit.spec import spec_from_dict


def make(networks: list[Any], **over: Any) -> Any:
    data = {"name": "p", "boot": {"kernel": "/k"}, "networks": networks, **over}
    return spec_from_dict(data, check_files=False)


def test_qemu_forwards_nat_itself_and_relays_taps() -> None:
    spec = make([{"mode": "nat", "publish": ["8080:80"]},
                 {"mode": "tap", "tap": "t0", "publish": ["127.0.0.1:9090:90"]}])  # fmt: skip
    assert portfwd.proxied(spec.to_json(), QemuDriver(arch="x86_64")) == [("127.0.0.1", 9090, 90)]
    vf = make([{"mode": "nat", "publish": ["8080:80"]}])
    assert portfwd.proxied(vf.to_json(), VfkitDriver(arch="aarch64")) == [("127.0.0.1", 8080, 80)]


def test_what_the_relay_cannot_do_is_refused_by_field() -> None:
    udp = make([{"mode": "nat", "publish": ["5353:53/udp"]}])
    with pytest.raises(NotSupported, match=r"networks\[0\]\.publish '5353:53/udp'.*TCP only"):
        portfwd.check(udp, VfkitDriver(arch="aarch64"))
    portfwd.check(udp, QemuDriver(arch="x86_64"))  # QEMU's user network forwards UDP
    tap = make([{"mode": "tap", "tap": "t0", "publish": ["8080:80"]}], accelerator="kvm")
    portfwd.check(tap, CloudHypervisorDriver())
    for net, text in (
        ({"mode": "switch", "switch": "lan", "publish": ["8080:80"]}, "NAT or TAP NIC"),
        ({"mode": "tap", "tap": "t0", "netns": "ns", "publish": ["8080:80"]}, "cannot reach"),
    ):
        with pytest.raises(SpecError, match=text):
            make([net])
