"""A QEMU copy restored from a snapshot of a VM with `vsock_cid` gets a CID of its own:
vhost-vsock CIDs are one space for the whole host, so the copy and its still-running
source cannot share one (QEMU would refuse to start the copy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmkit.drivers import driver_class
from vmkit.machine import Host
from vmkit.snapshot_ops import free_vsock_cid
from vmkit.spec import spec_from_dict


def _register(host: Host, name: str, cid: int | None) -> None:
    data = {"name": name, "boot": {"kernel": "/k"}, "vsock_cid": cid}
    host.register(spec_from_dict(data, check_files=False).to_json(), "qemu")


@pytest.mark.access_path("qemu-vhost-vsock", "contract")
def test_a_copy_gets_a_cid_no_vm_of_the_store_has(tmp_path: Path) -> None:
    host = Host(tmp_path / "home")
    _register(host, "source", 7)
    _register(host, "other", 8)
    _register(host, "plain", None)
    first = free_vsock_cid(host, 7)
    assert first not in (7, 8) and 3 <= first < 2**31
    _register(host, "copy-1", first)
    second = free_vsock_cid(host, 7)
    assert second not in (7, 8, first)
    assert free_vsock_cid(host, 9) == 9  # nobody has it: the snapshot's own CID stays


def test_only_drivers_with_a_host_wide_cid_space_need_it() -> None:
    assert driver_class("qemu").vsock_cids_host_wide
    assert not driver_class("cloud-hypervisor").vsock_cids_host_wide  # hybrid socket
    assert not driver_class("vfkit").vsock_cids_host_wide  # fixed CID 3 per VM
