"""Pause, snapshot/restore, hotplug, reboot and live migration on real QEMU (TCG).

The tiny guest is booted with `vmkit.ticker=1`: it prints `VMKIT_TICK n` on its console
twice a second, so a test can see whether the guest's vCPUs are really running.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from guestio import guest_run, serial_log

import module_probe
from vmkit.net.mac import stable_mac

TCG = ("--accel", "tcg")
TICKER = ("--cmdline", "quiet vmkit.ticker=1")
TICK_RE = re.compile(r"VMKIT_TICK (\d+)")


def capability(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.capability("qemu", *names)


def last_tick(log: Path) -> int:
    ticks = TICK_RE.findall(log.read_text(errors="replace"))
    return int(ticks[-1]) if ticks else 0


def wait_tick_above(log: Path, n: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while (t := last_tick(log)) <= n:
        assert time.monotonic() < deadline, f"the guest's counter stayed at {t} (wanted > {n})"
        time.sleep(0.1)
    return t


@capability("pause")
def test_pause_stops_the_guest_counter_and_resume_continues_it(cli, guest):
    cli.ok("run", "p", *TICKER, *TCG)
    log = serial_log(cli, "p")
    wait_tick_above(log, 1)

    paused = cli.json("pause", "p")
    assert paused[0]["state"] == "paused"
    frozen = last_tick(log)
    time.sleep(2.0)  # four ticks' worth
    assert last_tick(log) == frozen
    assert cli.json("inspect", "p")["status"]["state"] == "paused"
    assert [v["state"] for v in cli.json("ls")] == ["paused"]

    resumed = cli.json("resume", "p")
    assert resumed[0]["state"] == "ready"
    wait_tick_above(log, frozen + 1)


def published_port_answers(cli, name: str) -> bool:
    """A port published on `name` at run time reaches a web server in the guest (QEMU's
    hostfwd forwards to the guest's NAT address: only a guest that has it answers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli.ok("port", "add", name, f"{port}:80")
    guest_run(
        cli, name,
        f"mkdir -p /tmp/www; echo {name} > /tmp/www/index.html; httpd -p 80 -h /tmp/www; echo up",
        r"\bup\b",
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read() == (
                f"{name}\n".encode()
            )
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)


@capability("snapshot", "restore_readiness")
def test_snapshot_restore_twice_gives_independent_ready_copies_with_own_macs(cli, guest, tmp_path):
    data = tmp_path / "data.img"
    data.write_bytes(b"original".ljust(1 << 20, b"\0"))
    src = cli.json("run", "src", "--net", "user", "--disk", str(data), *TICKER, *TCG)
    assert src["ip"] == "10.0.2.15"  # slirp's first lease
    guest_run(cli, "src", "printf written > /dev/vda; sync", "")

    snap = cli.json("snapshot", "create", "src", "warm")
    assert snap["source"] == "src" and snap["driver"] == "qemu"
    assert snap["shared_ram"] == "yes"  # RAM in a file the copies map copy-on-write
    assert snap["bytes"] > 1 << 20 and snap["state_bytes"] < snap["bytes"]
    assert cli.json("inspect", "src")["status"]["state"] == "ready"  # kept running
    listed = cli.json("snapshot", "ls")
    assert [s["name"] for s in listed] == ["warm"]

    # the source changes its disk after the snapshot: the copies must not see that
    guest_run(cli, "src", "printf CHANGED! > /dev/vda; sync", "")

    # the console script's own path, which loads nothing it does not use
    direct = subprocess.run(module_probe.argv("restore", "warm", "--name", "one", "--json"),
                            env=cli.env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert direct.returncode == 0, direct.stderr
    assert module_probe.loaded(direct.stderr) == []
    one = json.loads(direct.stdout)
    by_click = subprocess.run(
        [sys.executable, "-m", "vmkit.cli", "restore", "warm", "--name", "two", "--json"],
        env=cli.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert by_click.returncode == 0, by_click.stderr
    two = json.loads(by_click.stdout)
    assert list(one) == list(two)  # the same record, field for field, from either path
    assert one["state"] == two["state"] == "ready"
    # readiness re-announced after restore; on QEMU's NAT (a private slirp per copy) each
    # copy keeps the source's address instead of leasing another one
    assert one["ip"] == two["ip"] == src["ip"]
    assert one["pid"] != two["pid"]
    for name in ("one", "two"):
        assert published_port_answers(cli, name)  # the kept address really carries traffic

    for name in ("one", "two"):
        mac = guest_run(cli, name, "cat /sys/class/net/eth0/address", r"52:54:00")
        assert stable_mac(name, 0) in mac.group(1)
        # drop the guest's page cache so the bytes come from this copy's disk clone
        disk = guest_run(cli, name, "echo 3 > /proc/sys/vm/drop_caches; head -c 8 /dev/vda", r"\w")
        assert "written" in disk.group(1) and "CHANGED" not in disk.group(1)
    assert stable_mac("one", 0) != stable_mac("two", 0)

    # independent: killing one leaves the other running
    log_two = serial_log(cli, "two")
    cli.ok("kill", "one")
    wait_tick_above(log_two, last_tick(log_two))
    assert cli.json("inspect", "two")["status"]["state"] == "ready"

    # a snapshot is removed atomically; restored VMs do not depend on it
    cli.ok("snapshot", "rm", "warm")
    assert cli.json("snapshot", "ls") == []
    wait_tick_above(log_two, last_tick(log_two))


@capability("snapshot")
def test_damaged_snapshot_fails_to_restore_and_leaves_nothing(cli, guest):
    cli.ok("run", "src", *TCG)
    snap = cli.json("snapshot", "create", "src", "s")
    cli.ok("kill", "src")
    state = Path(snap["path"]) / snap["state_file"]

    # truncated: caught before anything is created
    original = state.read_bytes()
    state.write_bytes(original[: len(original) // 2])
    proc = cli("restore", "s", "--name", "bad")
    assert proc.returncode == 1
    assert "damaged" in proc.stderr and "truncated" in proc.stderr
    assert [v["name"] for v in cli.json("ls")] == ["src"]

    # same size but garbage: QEMU refuses the stream; the half-started VM is removed
    state.write_bytes(b"\0" * len(original))
    proc = cli("restore", "s", "--name", "bad")
    assert proc.returncode == 1
    assert "restoring snapshot 's' failed" in proc.stderr
    assert [v["name"] for v in cli.json("ls")] == ["src"]
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if "guest=vmkit-bad" in (p.info["cmdline"] or [])
    ]


@capability("hotplug_disk", "hotplug_net")
def test_hotplug_disk_and_nic_into_a_running_guest(cli, guest, tmp_path):
    boot_disk = tmp_path / "boot.img"
    boot_disk.write_bytes(bytes(1 << 20))
    extra = tmp_path / "extra.img"
    extra.write_bytes(b"hotplugged-disk".ljust(4 << 20, b"\0"))
    cli.ok("run", "hp", "--disk", str(boot_disk), "--net", "user", *TCG)
    guest_run(cli, "hp", "ls /dev/vd*", r"/dev/vda")

    added = cli.json("disk", "add", "hp", str(extra))
    assert added["id"] == "hd0" and added["format"] == "raw"
    m = guest_run(cli, "hp", "sleep 1; ls /dev/vd*; head -c 15 /dev/vdb", r"hotplugged-disk")
    assert "/dev/vdb" in m.group(1)

    nic = cli.json("net", "add", "hp")
    assert nic["id"] == "hn0"
    m = guest_run(cli, "hp", "sleep 1; cat /sys/class/net/eth1/address", r"52:54:00")
    assert nic["mac"] in m.group(1)

    # a snapshot must not silently drop hot-plugged devices
    proc = cli("snapshot", "create", "hp", "nope")
    assert proc.returncode == 1 and "hot-plugged devices" in proc.stderr

    cli.ok("disk", "rm", "hp", "hd0")
    guest_run(cli, "hp", "ls /dev/vd*", r"/dev/vda")
    m = guest_run(cli, "hp", "ls /dev/vdb 2>&1", r"No such file")
    cli.ok("net", "rm", "hp", "hn0")
    guest_run(cli, "hp", "ls /sys/class/net/eth1 2>&1", r"No such file")
    assert cli.json("inspect", "hp")["runtime"]["hotplug"] == {}

    proc = cli("disk", "rm", "hp", "hd7")
    assert proc.returncode == 2 and "no hot-plugged device 'hd7'" in proc.stderr
    proc = cli("disk", "add", "hp", str(tmp_path / "missing.img"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@capability("migrate")
def test_live_migration_moves_the_running_guest(cli, guest, tmp_path):
    disk = tmp_path / "shared.img"
    disk.write_bytes(bytes(1 << 20))
    cli.ok("run", "a", "--net", "user", "--disk", str(disk), *TICKER, *TCG)
    src_log = serial_log(cli, "a")
    wait_tick_above(src_log, 2)
    src_pid = cli.json("inspect", "a")["status"]["pid"]

    moved = cli.json("migrate", "a", "--to", "b")
    assert moved["state"] == "ready" and moved["ip"] == "10.0.2.15"
    assert moved["pid"] != src_pid
    before = last_tick(src_log)
    dst_log = serial_log(cli, "b")
    after = wait_tick_above(dst_log, before)
    # the counter continued (the guest kept its memory), it did not restart from 1
    assert min(int(t) for t in TICK_RE.findall(dst_log.read_text())) > 1
    assert after > before

    src = cli.json("inspect", "a")["status"]
    assert src["state"] == "stopped" and "migrated to b" in src["reason"]
    assert not psutil.pid_exists(src_pid) or psutil.Process(src_pid).status() == "zombie"
    guest_run(cli, "b", "echo still-$((40+2))", r"still-42")
    # the disk (shared storage on one host) is writable from the new VMM
    guest_run(cli, "b", "printf migrated > /dev/vda; sync; echo synced", r"synced")
    assert disk.read_bytes().startswith(b"migrated")


@capability("reboot")
def test_reboot_boots_again_and_becomes_ready(cli, guest):
    cli.ok("run", "r", *TCG)
    log = serial_log(cli, "r")
    boots = log.read_text().count("VMKIT_READY")
    rebooted = cli.json("reboot", "r", "--wait")
    assert rebooted["state"] == "ready"
    assert log.read_text().count("VMKIT_READY") == boots + 1


def test_verbs_on_a_vm_that_is_not_running_say_why(cli, guest):
    cli.ok("create", "idle", *TCG)
    for args in (("pause", "idle"), ("snapshot", "create", "idle", "s"), ("reboot", "idle")):
        proc = cli(*args)
        assert proc.returncode == 1, args
        assert "it is created" in proc.stderr and "vmkit start idle" in proc.stderr
    proc = cli("restore", "nosuch")
    assert proc.returncode == 2 and "no snapshot named 'nosuch'" in proc.stderr
    proc = cli("snapshot", "create", "idle", "../x")
    assert proc.returncode == 2


def test_snapshot_from_one_driver_is_refused_by_another(cli, guest):
    cli.ok("run", "q", *TCG)
    cli.ok("snapshot", "create", "q", "qs")
    proc = cli("restore", "qs", "--driver", "cloud-hypervisor")
    assert proc.returncode == 2
    assert "taken with the qemu driver" in proc.stderr
    assert [v["name"] for v in cli.json("ls")] == ["q"]
    proc = cli("restore", "qs", "--memory-restore", "ondemand")
    assert proc.returncode == 2 and "Cloud Hypervisor feature" in proc.stderr
    dup = cli("snapshot", "create", "q", "qs")
    assert dup.returncode == 2 and "already exists" in dup.stderr


def test_verbs_a_driver_cannot_do_are_refused_before_touching_the_vm(cli, guest):
    cli.ok("run", "q", *TCG)
    proc = cli("resize", "q", "--cpus", "2")
    assert proc.returncode == 1 and "qemu driver cannot resize a running VM" in proc.stderr
    proc = cli("counters", "q")
    assert proc.returncode == 1 and "cannot report device counters" in proc.stderr
    proc = cli("share", "add", "q", "/tmp", "t")
    assert proc.returncode == 1 and "qemu driver cannot hot-plug shares" in proc.stderr
    assert cli.json("inspect", "q")["status"]["state"] == "ready"
