"""Real VMs on real QEMU (TCG): run, ready, stop, kill, rm, re-adoption, crashes."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import module_probe
from vmkit.machine import Host

TCG = ("--accel", "tcg")


def capability(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.capability("qemu", *names)


def _pid(cli, name: str) -> int:
    return int(cli.json("inspect", name)["status"]["pid"])


@capability("boot_linux", "readiness")
def test_a_plain_run_gives_the_same_vm_by_either_path(cli, guest):
    """`vmkit run NAME [--json]` is answered without click (cli_direct.py): the same spec,
    the same readiness record, the same text, as the click command's."""
    direct = subprocess.run(module_probe.argv("run", "a", "--json", watched=("click",)),
                            env=cli.env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert direct.returncode == 0, direct.stderr
    assert module_probe.loaded(direct.stderr) == []
    by_click = subprocess.run([sys.executable, "-m", "vmkit.cli", "run", "b", "--json"],
                              env=cli.env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert by_click.returncode == 0, by_click.stderr
    one, two = json.loads(direct.stdout), json.loads(by_click.stdout)
    assert list(one) == list(two) and one["state"] == two["state"] == "ready"
    specs = [cli.json("inspect", name)["spec"] for name in ("a", "b")]
    for spec in specs:
        spec.pop("name")
    assert specs[0] == specs[1]  # every default the same
    text = cli.ok("run", "c")
    assert re.fullmatch(r"c is READY in \d+\.\d\ds \(ip -, pid \d+\)\n", text.stdout), text
    bad = [cli("run", "Not_A_Name"), subprocess.run(
        [sys.executable, "-m", "vmkit.cli", "run", "Not_A_Name"],
        env=cli.env, capture_output=True, text=True, timeout=60)]  # fmt: skip
    assert bad[0].returncode == bad[1].returncode == 2 and bad[0].stderr == bad[1].stderr
    assert {vm["name"] for vm in cli.json("ls")} == {"a", "b", "c"}


@capability("boot_linux", "readiness", "graceful_stop", "net_none")
def test_run_ready_then_graceful_stop_via_acpi(cli, guest):
    ready = cli.json("run", "demo", *TCG)
    assert ready["state"] == "ready"
    assert ready["ip"] is None  # no network: the guest says "VMKIT_READY -"
    assert ready["seconds_to_ready"] > 0
    pid = ready["pid"]
    assert psutil.pid_exists(pid)

    listed = cli.json("ls")
    assert [(v["name"], v["state"]) for v in listed] == [("demo", "ready")]
    for args in ((), ("--json",)):  # the console script's `ls` (views, no click) prints the
        full = subprocess.run(  # click command's bytes for a live VM too (state from QMP)
            [sys.executable, "-m", "vmkit.cli", "ls", *args],
            env=cli.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.ok("ls", *args).stdout == full.stdout, full.stderr
    assert "VMKIT_READY -" in cli.ok("logs", "demo").stdout

    stopped = cli.json("stop", "demo", "--timeout", "60")
    assert stopped[0]["step"] == "acpi", stopped  # the guest powered itself off
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    status = cli.json("inspect", "demo")["status"]
    assert status["state"] == "stopped"
    assert "acpi" in status["reason"]
    assert "vmkit-guest: powering off" in cli.ok("logs", "demo").stdout
    # sockets are gone with the VMM
    runtime = cli.json("inspect", "demo")["runtime"]
    assert not any(Path(p).exists() for p in runtime["sockets"].values())


@capability("graceful_stop")
def test_stop_escalates_to_sigterm_when_guest_ignores_power_button(cli, guest, tmp_path):
    # acpi=off: the guest kernel never sees the power button, so only SIGTERM can end it.
    spec = tmp_path / "deaf.yaml"
    spec.write_text(
        f"name: deaf\nboot:\n  kernel: {guest.kernel}\n  initrd: {guest.initrd}\n"
        "  cmdline: console=ttyS0 quiet acpi=off\naccelerator: tcg\n"
    )
    cli.ok("run", "-f", str(spec))
    stopped = cli.json("stop", "deaf", "--timeout", "3")
    assert stopped[0]["step"] == "sigterm"
    assert cli.json("inspect", "deaf")["status"]["state"] == "stopped"


@capability("kill")
def test_kill_then_rm_leaves_nothing(cli, guest):
    cli.ok("run", "k1", *TCG)
    vm_dir = Path(cli.json("inspect", "k1")["paths"]["dir"])
    sockets = [Path(p) for p in cli.json("inspect", "k1")["runtime"]["sockets"].values()]
    assert all(s.exists() for s in sockets)

    refused = cli("rm", "k1")
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    assert vm_dir.exists()

    assert "killed" in cli.ok("kill", "k1").stdout
    status = cli.json("inspect", "k1")["status"]
    assert status["state"] == "stopped"
    assert "kill" in status["reason"]
    cli.ok("rm", "k1")
    assert not vm_dir.exists()
    assert not any(s.exists() for s in sockets)
    assert cli.json("ls") == []


@capability("kill")
def test_rm_force_kills_a_running_vm(cli, guest):
    cli.ok("run", "f1", *TCG)
    pid = _pid(cli, "f1")
    cli.ok("rm", "--force", "f1")
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "QEMU survived rm --force"
        time.sleep(0.05)
    assert cli.json("ls") == []


@capability("readopt", "net_user")
def test_second_process_readopts_and_controls_a_running_vm(cli, guest):
    # Process 1 starts and exits; process 2 waits; this (third) process inspects and stops.
    cli.ok("create", "adopt", "--net", "user", *TCG)
    cli.ok("start", "adopt")
    waited = cli.json("wait", "adopt")
    assert waited["state"] == "ready"
    assert waited["ip"] == "10.0.2.15"  # QEMU user networking's DHCP address, from the guest

    machine = Host(cli.home).get("adopt")
    status = machine.status()
    assert status.state == "ready" and status.pid == waited["pid"]
    result = machine.stop(timeout=60)
    assert result.step == "acpi"
    assert cli.json("inspect", "adopt")["status"]["state"] == "stopped"


@capability("crash_detection")
def test_vmm_killed_behind_our_back_shows_failed_with_reason(cli, guest):
    cli.ok("run", "crash", *TCG)
    pid = _pid(cli, "crash")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        status = cli.json("inspect", "crash")["status"]
        if status["state"] != "ready" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status["state"] == "failed"
    assert "killed or crashed" in status["reason"]
    assert any("VMKIT_READY" in line for line in status["serial_log_tail"])
    assert any("vmkit: starting crash" in line for line in status["vmm_log_tail"])
    text = cli.ok("inspect", "crash").stdout
    assert "failed" in text and "last lines of serial.log" in text

    # gc cleans the dead VMM's sockets; the VM record itself stays (it is the user's).
    sockets = [Path(p) for p in cli.json("inspect", "crash")["runtime"]["sockets"].values()]
    assert any(s.exists() for s in sockets)
    report = cli.json("gc")
    assert report["finalized"] == ["crash"]
    assert not any(s.exists() for s in sockets)
    assert cli.json("inspect", "crash")["status"]["state"] == "failed"
    # and it can be started again
    cli.ok("start", "crash", "--wait")
    assert cli.json("inspect", "crash")["status"]["state"] == "ready"


@capability("console", "disk_raw", "disk_qcow2", "rng", "balloon")
def test_console_runs_commands_and_guest_poweroff_is_a_clean_stop(cli, guest, tmp_path):
    disk = tmp_path / "data.img"
    disk.write_bytes(b"vmkit-disk-signature".ljust(1 << 20, b"\0"))
    qcow = tmp_path / "data.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disk), str(qcow)], check=True
    )
    cli.ok("run", "con", "--disk", str(disk), "--disk-ro", str(qcow), "--balloon", *TCG)
    out = cli.ok(
        "console",
        "con",
        input="echo console-$((6*7)); head -c 20 /dev/vda; echo; head -c 20 /dev/vdb; echo\n"
        "cat /sys/devices/virtual/misc/hw_random/rng_current\n"
        "echo balloon=$(ls /sys/bus/virtio/drivers/virtio_balloon/ | grep -c virtio)\n"
        "echo vdb-ro=$(cat /sys/block/vdb/ro)\n",
    ).stdout
    assert "console-42" in out
    assert out.count("vmkit-disk-signature") == 2  # the raw disk and the qcow2 disk
    assert "virtio_rng.0" in out
    assert "balloon=1" in out
    assert "vdb-ro=1" in out  # --disk-ro is read-only inside the guest

    _interactive_console_then_detach(cli, "con")

    cli.ok("console", "con", input="poweroff\n")
    deadline = time.monotonic() + 30
    while cli.json("inspect", "con")["status"]["state"] not in ("stopped", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status = cli.json("inspect", "con")["status"]
    assert status["state"] == "stopped"
    assert "guest shutdown" in status["reason"]


@capability("readiness")
def test_readiness_timeout_fails_with_log_tails(cli, guest, tmp_path):
    spec = tmp_path / "never.json"
    spec.write_text(
        json.dumps(
            {
                "name": "never",
                "boot": {
                    "kernel": str(guest.kernel),
                    "initrd": str(guest.initrd),
                    "cmdline": "",  # not quiet: the kernel's lines reach the log at once
                },
                "readiness": {"marker": "NEVER_SAID", "timeout": 8},
                "accelerator": "tcg",
            }
        )
    )
    proc = cli("run", "-f", str(spec))
    assert proc.returncode == 1
    assert "did not print 'NEVER_SAID <ip>' within 8s" in proc.stderr
    # the serial log's tail is in the message (a loaded machine may not have reached
    # VMKIT_READY within 8 s, but the kernel has printed by then)
    serial_tail = proc.stderr.split("serial.log ---\n", 1)[1].splitlines()
    assert serial_tail and serial_tail[0] != "(empty)", proc.stderr
    assert "vmkit kill never" in proc.stderr
    status = cli.json("inspect", "never")["status"]
    assert status["state"] == "failed"
    cli.ok("kill", "never")


def _interactive_console_then_detach(cli, name: str) -> None:
    """On a real terminal (a pty): raw mode, a command round-trips, Ctrl-] detaches."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmkit.cli", "console", name],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=cli.env,
        close_fds=True,
    )
    os.close(slave)
    seen = b""

    def read_until(needle: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 20
        while needle not in seen:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                seen += os.read(master, 4096)

    try:
        read_until(b"detach with Ctrl-]")
        time.sleep(0.3)  # the banner is printed just before the terminal goes raw
        os.write(master, b"echo tty-$((2+3))\r")
        read_until(b"tty-5")
        os.write(master, b"\x1d")  # Ctrl-]
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert b"detach with Ctrl-]" in seen
