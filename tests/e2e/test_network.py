"""Networking on real QEMU (TCG): vmkit's userspace L2 switch and published ports."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from guestio import guest_run

TCG = ("--accel", "tcg")


def capability(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.capability("qemu", *names)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _switch_pids(cli) -> list[int]:
    return [sw["pid"] for sw in cli.json("switch", "ls")]


@capability("net_switch")
def test_guests_on_one_switch_reach_each_other_and_not_another_switch(cli, guest):
    cli.ok("run", "a", "--net", "switch:lan", "--ip", "10.10.0.2/24", *TCG)
    cli.ok("run", "b", "--net", "switch:lan", "--ip", "10.10.0.3/24", *TCG)
    cli.ok("run", "c", "--net", "switch:other", "--ip", "10.10.0.4/24", *TCG)

    switches = {sw["name"]: sw for sw in cli.json("switch", "ls")}
    assert set(switches) == {"lan", "other"}
    assert sorted(switches["lan"]["vms"]) == ["a", "b"]
    assert switches["other"]["vms"] == ["c"]

    guest_run(cli, "a", "ping -c 2 -W 3 10.10.0.3", r" 0% packet loss")
    guest_run(cli, "b", "ping -c 2 -W 3 10.10.0.2", r" 0% packet loss")
    # c has an address on the same subnet but sits on another switch: nothing gets through
    guest_run(cli, "c", "ping -c 2 -W 2 10.10.0.2", r"100% packet loss")

    lan = next(sw for sw in cli.json("switch", "ls") if sw["name"] == "lan")
    assert len(lan["ports"]) == 2
    assert all(p["rx_frames"] > 0 and p["tx_frames"] > 0 for p in lan["ports"].values())
    assert len(lan["macs"]) == 2  # both guests' MACs learned

    # the switch stays while a VM uses it and stops with the last one
    pids = _switch_pids(cli)
    runtime_dir = Path(cli.env["VMKIT_RUNTIME_DIR"])
    cli.ok("kill", "a")
    assert {sw["name"] for sw in cli.json("switch", "ls")} == {"lan", "other"}
    cli.ok("kill", "b", "c")
    assert cli.json("switch", "ls") == []
    assert all(_gone(p) for p in pids)
    leftovers = [p.name for p in runtime_dir.iterdir()]
    assert leftovers == [], leftovers  # no VM socket, no switch dir


@capability("hotplug_net", "net_switch")
def test_a_nic_hot_plugged_onto_a_switch_reaches_the_guest_already_there(cli, guest):
    cli.ok("run", "a", "--net", "switch:lan", "--ip", "10.10.0.2/24", *TCG)
    cli.ok("run", "b", *TCG)
    nic = cli.json("net", "add", "b", "--mode", "switch", "--switch", "lan")
    assert nic["mode"] == "switch" and nic["switch"] == "lan"
    lan = next(sw for sw in cli.json("switch", "ls") if sw["name"] == "lan")
    assert sorted(lan["vms"]) == ["a", "b"]
    guest_run(cli, "b", "sleep 1; ip addr add 10.10.0.3/24 dev eth0; ip link set eth0 up", "")
    guest_run(cli, "b", "ping -c 2 -W 3 10.10.0.2", r" 0% packet loss")
    cli.ok("net", "rm", "b", nic["id"])
    lan = next(sw for sw in cli.json("switch", "ls") if sw["name"] == "lan")
    assert lan["vms"] == ["a"]  # b's lease went with its only NIC on lan
    assert not Path(nic["port"]).exists()
    nic = cli.json("net", "add", "b", "--mode", "switch", "--switch", "other")
    assert {sw["name"] for sw in cli.json("switch", "ls")} == {"lan", "other"}
    assert Path(nic["port"]).exists()
    cli.ok("kill", "b")  # a switch joined only by hot-plug stops with its VM too
    assert {sw["name"] for sw in cli.json("switch", "ls")} == {"lan"}
    assert not Path(nic["port"]).exists()  # nor does its hot-plugged port's socket stay
    cli.ok("kill", "a")
    assert cli.json("switch", "ls") == []


@capability("net_switch")
def test_a_crashed_vm_s_switch_is_collected_by_gc(cli, guest):
    cli.ok("run", "lone", "--net", "switch:lan", "--ip", "10.10.0.2/24", *TCG)
    vm_pid = cli.json("inspect", "lone")["status"]["pid"]
    (switch_pid,) = _switch_pids(cli)
    psutil.Process(vm_pid).kill()  # behind vmkit's back
    deadline = time.monotonic() + 10
    while not _gone(vm_pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    report = cli.json("gc")
    assert report["stopped_switches"] == ["lan"]
    assert _gone(switch_pid)


@capability("net_user", "publish")
def test_published_port_reaches_a_listener_in_the_guest(cli, guest):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli.ok("run", "web", "--publish", f"{port}:80", *TCG)
    guest_run(
        cli,
        "web",
        "mkdir -p /tmp/www; echo hello-from-guest > /tmp/www/index.html; "
        "httpd -p 80 -h /tmp/www; echo httpd-up",
        r"httpd-up",
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert body == b"hello-from-guest\n"

    # ports added and removed while the VM runs
    with socket.socket() as s2:
        s2.bind(("127.0.0.1", 0))
        port2 = s2.getsockname()[1]
    cli.ok("port", "add", "web", f"{port2}:80")
    listed = cli.json("port", "ls", "web")
    assert {(p["host"], p["source"]) for p in listed} == {(port, "spec"), (port2, "runtime")}
    body2 = urllib.request.urlopen(f"http://127.0.0.1:{port2}/", timeout=10).read()
    assert body2 == b"hello-from-guest\n"
    proc = cli("port", "add", "web", f"{port}:80")
    assert proc.returncode == 2 and "in use" in proc.stderr
    cli.ok("port", "rm", "web", str(port2))
    assert [p["host"] for p in cli.json("port", "ls", "web")] == [port]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port2}/", timeout=3).read()

    # the same host port again: a clear error before anything is launched, nothing left
    proc = cli("run", "web2", "--publish", f"{port}:80", *TCG)
    assert proc.returncode == 2
    assert f"127.0.0.1:{port}/tcp" in proc.stderr and "in use" in proc.stderr
    assert [v["name"] for v in cli.json("ls")] == ["web"]


def test_bad_network_flags_are_refused(cli, guest):
    for args, text in (
        (("--net", "switch:../x"), "not a valid name"),
        (("--net", "bogus"), "use nat, user, switch:NAME, tap:IFNAME[@NETNS], vmnet:"),
        (("--net", "tap:this-name-is-too-long"), "not an interface name"),
        (("--publish", "99999:80"), "out of range"),
        (("--ip", "10.0.0.1/24"), "--ip needs a NIC"),
        (("--net", "switch:lan", "--publish", "8080:80", "--net", "none"), "cannot be combined"),
    ):
        proc = cli("create", "bad", *args, *TCG)
        assert proc.returncode == 2, (args, proc.stderr)
        assert text in proc.stderr, (args, proc.stderr)
    assert cli.json("ls") == []


@capability("net_tap")
def test_guest_on_a_tap_in_a_network_namespace_answers_pings_from_it(cli, guest):
    import os
    import subprocess
    import sys
    import uuid

    if os.geteuid() != 0:
        pytest.skip("TAPs and network namespaces need root")
    ns = f"vkt-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        cli.ok("run", "tapvm", "--net", f"tap:vktap0@{ns}", "--ip", "192.168.77.2/24", *TCG)
        helpers = cli.json("inspect", "tapvm")["runtime"]["helpers"]
        assert helpers == [{"kind": "tap", "name": "vktap0", "netns": ns, "created": True}]
        # the address exists only inside the namespace the test made
        subprocess.run(
            ["ip", "netns", "exec", ns, "ip", "addr", "add", "192.168.77.1/24", "dev", "vktap0"],
            check=True,
        )
        pinger = Path(__file__).with_name("icmp_ping.py")
        ping = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, str(pinger), "192.168.77.2"], timeout=60
        )
        assert ping.returncode == 0, "no echo reply from the guest through the TAP"
        # not reachable from the host's own namespace
        outside = subprocess.run([sys.executable, str(pinger), "192.168.77.2", "1"], timeout=60)
        assert outside.returncode != 0

        cli.ok("kill", "tapvm")
        links = subprocess.run(
            ["ip", "netns", "exec", ns, "ip", "-o", "link"], capture_output=True, text=True
        ).stdout
        assert "vktap0" not in links  # vmkit made it, vmkit removed it
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@capability("hotplug_net", "net_tap")
def test_an_existing_tap_hot_plugged_into_a_running_guest_carries_pings(cli, guest):
    import os
    import subprocess
    import sys
    import uuid

    from guestio import guest_run

    if os.geteuid() != 0:
        pytest.skip("TAPs and network namespaces need root")
    ns = f"vkh-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        cli.ok("run", "hot", *TCG)
        proc = cli("net", "add", "hot", "--mode", "tap", "--tap", "vkhot0", "--netns", ns)
        assert proc.returncode == 1 and "does not exist: create it first" in proc.stderr
        links = subprocess.run(
            ["ip", "netns", "exec", ns, "ip", "-o", "link"], capture_output=True, text=True
        ).stdout
        assert "vkhot0" not in links  # the refused attach made nothing
        netns_ip = ["ip", "netns", "exec", ns, "ip"]
        subprocess.run([*netns_ip, "tuntap", "add", "vkhot0", "mode", "tap"], check=True)
        subprocess.run([*netns_ip, "addr", "add", "192.168.78.1/24", "dev", "vkhot0"], check=True)
        nic = cli.json("net", "add", "hot", "--mode", "tap", "--tap", "vkhot0", "--netns", ns)
        assert nic["mode"] == "tap" and nic["tap"] == "vkhot0" and nic["netns"] == ns
        guest_run(
            cli, "hot",
            "sleep 1; ip addr add 192.168.78.2/24 dev eth0 && ip link set eth0 up && echo up",
            r"\bup\b",
        )  # fmt: skip
        pinger = Path(__file__).with_name("icmp_ping.py")
        ping = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, str(pinger), "192.168.78.2"], timeout=60
        )
        assert ping.returncode == 0, "no echo reply through the hot-plugged TAP"
        cli.ok("net", "rm", "hot", nic["id"])
        guest_run(cli, "hot", "ls /sys/class/net/eth0 2>&1", r"No such file")
        cli.ok("kill", "hot")
        links = subprocess.run(
            ["ip", "netns", "exec", ns, "ip", "-o", "link"], capture_output=True, text=True
        ).stdout
        assert "vkhot0" in links  # the user's TAP: vmkit leaves it alone
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@capability("publish", "net_tap")
def test_a_port_published_on_a_tap_nic_goes_through_vmkits_relay(cli, guest, tmp_path):
    import json as jsonlib
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("TAPs need root")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "pub.json"
    spec.write_text(
        jsonlib.dumps(
            {
                "name": "pub",
                "boot": {
                    "kernel": str(guest.kernel),
                    "initrd": str(guest.initrd),
                    "cmdline": "console=ttyS0 quiet vmkit.ip=192.168.81.2/24",
                },
                "networks": [{"mode": "tap", "tap": "vkpub0", "publish": [f"{port}:80"]}],
                "accelerator": "tcg",
            }
        )
    )
    cli.ok("create", "-f", str(spec))
    cli.ok("start", "pub", "--wait")
    try:
        subprocess.run(["ip", "addr", "add", "192.168.81.1/24", "dev", "vkpub0"], check=True)
        guest_run(
            cli, "pub",
            "mkdir -p /tmp/www; echo via-relay > /tmp/www/index.html; httpd -p 80 -h /tmp/www;"
            " echo httpd-up",
            r"httpd-up",
        )  # fmt: skip
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
        assert body == b"via-relay\n"
        relay = [
            h for h in cli.json("inspect", "pub")["runtime"]["helpers"] if h["kind"] == "portfwd"
        ]
        assert len(relay) == 1
        cli.ok("stop", "pub")
        assert _gone(relay[0]["pid"])
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as vmkit's check does
            s.bind(("127.0.0.1", port))  # the host port is free again: nobody listens
            s.listen(1)
    finally:
        cli("kill", "pub")
