"""The exact bytes a restore writes to the guest agent's control port (drivers/qemu/guestctl).

The FIFOs are real (as the QEMU driver makes them); the thread on their far side stands in
for QEMU and the guest agent (a test double: it records what arrives and answers once).
What an agent does with those bytes is tested on real guests: today's agent in
tests/e2e/test_advanced.py (NAT) and test_restore_addresses.py (switch, a stray note), the
one from before `keep-addr` existed in test_restore_addresses.py.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from vmkit.drivers.qemu import guestctl
from vmkit.drivers.qemu.control import QemuControl
from vmkit.drivers.qemu.driver import QemuDriver
from vmkit.spec_devices import Network

MAC0 = "52:54:00:12:34:56"
MAC1 = "52:54:00:ab:cd:ef"


class AgentDouble:
    """Reads the host's bytes from PATH.in, answers `ok 10.0.2.15` on PATH.out."""

    def __init__(self, ctl: Path):
        self.ctl = ctl
        for suffix in (".in", ".out"):
            os.mkfifo(f"{ctl}{suffix}", 0o600)
        # QEMU holds both FIFOs open read-write; so does the double
        self.in_fd = os.open(f"{ctl}.in", os.O_RDWR)
        self.out_fd = os.open(f"{ctl}.out", os.O_RDWR)
        self.got = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.got = os.read(self.in_fd, 4096)  # one write from the host: one read here
        os.write(self.out_fd, b"ok 10.0.2.15\n")

    def close(self) -> None:
        self.thread.join(5)
        os.close(self.in_fd)
        os.close(self.out_fd)


@pytest.fixture
def agent(tmp_path: Path):
    double = AgentDouble(tmp_path / "ctl")
    yield double
    double.close()


def announce(ctl: Path, vm_dir: Path, networks: list[Network], own_agent: bool = True) -> None:
    control = QemuControl(QemuDriver(), {"ctl.in": f"{ctl}.in"}, vm_dir)
    answer = control.announce_readiness(networks, own_agent)
    assert answer == "10.0.2.15"  # the answer: its readiness


@pytest.mark.parametrize("mode", ["nat", "user"])
def test_a_dhcp_nic_on_qemus_nat_keeps_its_address(agent, tmp_path, mode):
    announce(agent.ctl, tmp_path, [Network(mode=mode, mac=MAC0)])
    # the note first, in the same write: an agent that predates it ignores the word and
    # then reads `restored` as always (guest/init.sh before keep-addr: no `case` match)
    assert agent.got == f"keep-addr\nrestored {MAC0}\n".encode()


@pytest.mark.parametrize(
    "networks",
    [
        [Network(mode="nat", mac=MAC0, ip="10.0.2.50/24")],  # static: nothing to renew
        [Network(mode="switch", switch="lan", mac=MAC0)],  # a shared LAN: renew
        [Network(mode="tap", tap="vkt0", mac=MAC0)],
        [Network(mode="switch", switch="lan", mac=MAC0), Network(mode="nat", mac=MAC1)],
    ],
    ids=["nat-static", "switch", "tap", "switch-then-nat"],
)
def test_any_other_first_nic_renews_as_before(agent, tmp_path, networks):
    announce(agent.ctl, tmp_path, networks)
    macs = " ".join(str(n.mac) for n in networks)
    assert agent.got == f"restored {macs}\n".encode()


def test_nat_first_then_a_switch_keeps_eth0_and_sends_every_mac(agent, tmp_path):
    nets = [Network(mode="nat", mac=MAC0), Network(mode="switch", switch="lan", mac=MAC1)]
    announce(agent.ctl, tmp_path, nets)
    assert agent.got == f"keep-addr\nrestored {MAC0} {MAC1}\n".encode()


def test_no_nic_is_a_bare_restored(agent, tmp_path):
    announce(agent.ctl, tmp_path, [])
    assert agent.got == b"restored\n"


def test_a_line_break_inside_a_request_is_refused_before_anything_is_written(agent):
    for line, notes in (("restored\nping", ()), ("restored", ("keep-addr\n",)), ("ping\r", ())):
        with pytest.raises(ValueError, match="line break"):
            guestctl.request(agent.ctl, line, 1.0, notes=notes)
    assert guestctl.request(agent.ctl, "ping", 5.0) == "ok 10.0.2.15"
    assert agent.got == b"ping\n"  # the refused ones never reached the port


@pytest.mark.parametrize(
    ("answer", "address"),
    [
        ("ok 10.0.2.15", "10.0.2.15"),
        ("ok fd00::0001", "fd00::1"),
        ("ok -", "-"),
        ("ok", None),
        ("ok ", None),
        ("ok 10.0.2.999", None),
        ("ok 10.0.2.15 and more", None),
        ("ok -x", None),
        ("error 10.0.2.15", None),
        ("", None),
    ],
)
def test_only_a_well_formed_answer_counts_as_readiness(answer: str, address: str | None) -> None:
    assert guestctl.answered_address(answer) == address


def test_an_agent_of_the_users_own_gets_no_note(agent, tmp_path):
    """README's example agent opens the port for each read: a note would be read alone and
    the request behind it discarded with the port's buffer. Only vmkit's agent gets one."""
    announce(agent.ctl, tmp_path, [Network(mode="nat", mac=MAC0)], own_agent=False)
    assert agent.got == f"restored {MAC0}\n".encode()


def test_the_tiny_guest_is_known_by_its_build_manifest(tmp_path):
    from vmkit.access.boot import runs_vmkit_agent
    from vmkit.spec import spec_from_dict

    build = tmp_path / "guest"
    build.mkdir()
    (build / "manifest.json").write_text('{"recipe": "x"}')
    for initrd, own in ((build / "initramfs.cpio.gz", True), (tmp_path / "mine.cpio.gz", False)):
        initrd.write_bytes(b"")
        (tmp_path / "vmlinuz").write_bytes(b"")
        boot = {"kind": "linux", "kernel": str(tmp_path / "vmlinuz"), "initrd": str(initrd)}
        spec = spec_from_dict({"name": "a", "boot": boot}, check_files=False)
        assert runs_vmkit_agent(spec) is own
