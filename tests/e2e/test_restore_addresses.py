"""Which address a restored copy has, on real QEMU guests (TCG).

On QEMU's user-mode NAT every copy has its own slirp, so the host tells the guest agent
`keep-addr` and the copy keeps the source's address (tests/e2e/test_advanced.py). Here: on a
shared LAN (a vmkit switch with a DHCP server on it) a copy still leases its own address,
even when its source's agent got a stray `keep-addr` before the snapshot; and a guest agent
from before `keep-addr` (its /init frozen in init_before_keep_addr.sh) ignores the note and
restores as it always did.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from guestio import guest_run

from vmkit.drivers.qemu import guestctl
from vmkit.guest import cpio
from vmkit.net.mac import stable_mac

TCG = ("--accel", "tcg")
UDHCPD_CONF = (
    "start 10.20.0.100\\nend 10.20.0.150\\ninterface eth0\\n"
    "lease_file /tmp/udhcpd.leases\\noption subnet 255.255.255.0\\n"
)


def capability(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.capability("qemu", *names)


@capability("snapshot", "restore_readiness", "net_switch")
def test_a_copy_on_a_switch_leases_its_own_address(cli, guest):
    cli.ok("run", "dhcpd", "--net", "switch:lan", "--ip", "10.20.0.1/24", *TCG)
    # busybox udhcpd in a guest: a DHCP server on the LAN (vmkit's switch has none)
    serve = f"printf '{UDHCPD_CONF}' > /tmp/u.conf; touch /tmp/udhcpd.leases; udhcpd /tmp/u.conf"
    guest_run(cli, "dhcpd", f"{serve} && echo serving", r"\bserving\b")
    src = cli.json("run", "src", "--net", "switch:lan", *TCG)
    assert src["ip"].startswith("10.20.0.1")  # leased from the guest's server
    # a stray note cannot reach a later restore: it lasts one request (here a ping), and
    # the snapshot holds the agent as it is after that
    runtime = json.loads((cli.home / "vms" / "src" / "runtime.json").read_text())
    ctl = runtime["sockets"]["ctl.in"].removesuffix(".in")
    assert guestctl.request(ctl, "ping", 30, notes=("keep-addr",)) == f"ok {src['ip']}"
    cli.json("snapshot", "create", "src", "lan")

    copy = cli.json("restore", "lan", "--name", "copy")
    assert copy["state"] == "ready"
    # two guests on one LAN cannot share an address: the copy renewed, with its new MAC
    assert copy["ip"].startswith("10.20.0.1") and copy["ip"] != src["ip"]
    mac = guest_run(cli, "copy", "cat /sys/class/net/eth0/address", r"52:54:00")
    assert stable_mac("copy", 0) in mac.group(1)
    leases = guest_run(cli, "copy", "ip -4 -o addr show dev eth0", r"inet ")
    assert f"inet {copy['ip']}/24" in leases.group(1)  # the address it announced is its own


@capability("snapshot", "restore_readiness")
def test_an_agent_older_than_keep_addr_ignores_it_and_renews(cli, guest, tmp_path: Path):
    old_init = Path(__file__).with_name("init_before_keep_addr.sh").read_bytes()
    assert b"keep-addr" not in old_init
    # the kernel unpacks appended archives over the first: this /init replaces today's;
    # laid out as a build of the tiny guest (its manifest beside it), as an older vmkit's
    # build is, so vmkit sends its own agent's note (access.boot.runs_vmkit_agent)
    build = tmp_path / "old-build"
    build.mkdir()
    shutil.copy(guest.initrd.parent / "manifest.json", build / "manifest.json")
    initrd = build / guest.initrd.name
    extra = cpio.write([cpio.file("init", old_init, 0o755)])
    initrd.write_bytes(guest.initrd.read_bytes() + gzip.compress(extra))
    boot = ("--kernel", str(guest.kernel), "--initrd", str(initrd))
    src = cli.json("run", "old", "--net", "nat", *boot, "--cmdline", "quiet vmkit.dhcp=1", *TCG)
    assert src["ip"] == "10.0.2.15"
    guest_run(cli, "old", "grep -c keep-addr /init", r"^\s*0\s*$")  # the old agent runs
    cli.json("snapshot", "create", "old", "s")

    # the host writes "keep-addr\nrestored MAC\n" (tests/unit/test_restored_request.py);
    # the old agent's `case` matches no keep-addr, so it takes the MAC and leases again
    copy = cli.json("restore", "s", "--name", "copy")
    assert copy["state"] == "ready"
    assert copy["ip"] == RENEWED_IP
    mac = guest_run(cli, "copy", "cat /sys/class/net/eth0/address", r"52:54:00")
    assert stable_mac("copy", 0) in mac.group(1)
    assert cli.json("inspect", "copy")["status"]["state"] == "ready"


RENEWED_IP = "10.0.2.16"  # slirp's lease table came with the snapshot: the new MAC gets .16
