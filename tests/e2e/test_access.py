"""`vmkit ssh`, `exec`, `cp` against the real tiny guest (dropbear) under QEMU TCG."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from vmkit.storage import sshkeys as keys

TCG = ("--accel", "tcg")


def capability(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.capability("qemu", *names)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@capability("guest_exec", "guest_copy", "net_none")
@pytest.mark.access_path("qemu-serial", "e2e")
def test_exec_and_cp_over_virtio_serial_without_a_network(cli, guest, tmp_path):
    cli.ok("run", "box", "--net", "none", "--wait-for", "ssh", *TCG, timeout=300)

    # streams, exit status, stdin, env, workdir
    proc = cli("exec", "box", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    proc = cli("exec", "box", "-i", "--", "tr", "a-z", "A-Z", input="hello\n")
    assert (proc.returncode, proc.stdout) == (0, "HELLO\n")
    proc = cli("exec", "box", "-e", "A=1", "-e", "B=two words", "-w", "/etc", "--",
               "sh", "-c", 'echo "$A|$B|$(pwd)"')  # fmt: skip
    assert proc.stdout == "1|two words|/etc\n"
    proc = cli("exec", "box", "--", "no-such-command")
    assert proc.returncode == 127 and "not found" in proc.stderr
    proc = cli("exec", "box", "-w", "/no/such/dir", "--", "true")
    assert proc.returncode == 126 and "/no/such/dir" in proc.stderr
    proc = cli("exec", "box", "--json", "--", "echo", "it's; not $(shell)")
    doc = __import__("json").loads(proc.stdout)
    assert doc["returncode"] == 0 and doc["stdout"] == "it's; not $(shell)\n"
    proc = cli("exec", "box", "--timeout", "2", "--", "sleep", "60")
    assert proc.returncode == 124
    proc = cli("exec", "box", "-e", "1BAD=x", "--", "true")
    assert proc.returncode == 2 and "--env" in proc.stderr

    # Ctrl-C and SIGTERM reach the guest command (by its pid: no TTY, no ssh signal)
    trap = 'trap "echo got-int; exit 9" INT; echo ready; while :; do sleep 0.1; done'
    for sig, script, want_rc, want_out in [
        (signal.SIGINT, trap, 9, "ready\ngot-int\n"),
        (signal.SIGTERM, "echo ready; exec sleep 600", 128 + signal.SIGTERM, "ready\n"),
    ]:
        p = subprocess.Popen([sys.executable, "-m", "vmkit.cli", "exec", "box", "--", "sh", "-c",
                              script], env=cli.env, stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        p.send_signal(sig)
        rest = p.stdout.read()
        assert (p.wait(60), "ready\n" + rest) == (want_rc, want_out)

    # cp a folder in and back out: contents and modes kept
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "run.sh").chmod(0o751)
    (src / "sub" / "data.bin").write_bytes(os.urandom(300_000))
    cli.ok("cp", str(src), "box:/root/")
    proc = cli.ok(
        "exec", "box", "--", "sh", "-c", "/root/tree/run.sh; stat -c %a /root/tree/run.sh"
    )
    assert proc.stdout == "ran\n751\n"
    out = tmp_path / "back"
    out.mkdir()
    cli.ok("cp", "box:/root/tree", str(out))
    assert (out / "tree" / "sub" / "data.bin").read_bytes() == (
        src / "sub" / "data.bin"
    ).read_bytes()
    assert (out / "tree" / "run.sh").stat().st_mode & 0o777 == 0o751
    cli.ok("cp", "box:/etc/passwd", str(out / "passwd"))
    assert (out / "passwd").read_text().startswith("root:")

    # faults: missing paths on either side, a folder onto an existing one
    for args, needle in [
        ((str(tmp_path / "nope"), "box:/root/"), "no such file or directory on the host"),
        (("box:/nope", str(out)), "no such file or directory in the guest"),
        ((str(src), "box:/no/such/dir/x"), "no such directory in the guest"),
        (("box:/etc/passwd", str(tmp_path / "no" / "dir" / "x")), "no such directory on the host"),
        ((str(src), "box:/root/"), "existing directory in the guest"),
        (("box:/root/tree", str(out)), "existing directory on the host"),
    ]:
        proc = cli("cp", *args)
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr)
    assert not list(out.glob(".vmkit-cp.*"))

    # the Python API and the argv a user can run
    from vmkit.machine import Host

    box = Host(cli.home).get("box")
    result = box.exec(["sh", "-c", "cat; echo e >&2; exit 5"], input=b"in")
    assert (result.returncode, result.stdout, result.stderr) == (5, b"in", b"e\n")
    argv = box.ssh_command()
    assert "StrictHostKeyChecking=yes" in argv
    done = subprocess.run([*argv, "--", "echo", "mine"], capture_output=True, timeout=60)
    assert done.stdout == b"mine\n"


@capability("guest_exec")
def test_interactive_shell_through_a_pseudo_terminal(cli, guest):
    cli.ok("run", "tty", "--wait-for", "ssh", *TCG, timeout=300)
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "vmkit.cli", "ssh", "tty"], cli.env)
    seen = b""
    try:
        os.write(fd, b"echo $((6*7))-$(tty)\n")
        deadline = time.monotonic() + 60
        while b"42-/dev/pts/" not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 1)[0]:
                seen += os.read(fd, 4096)
        assert b"42-/dev/pts/" in seen, seen
        os.write(fd, b"exit 7\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 7
    finally:
        os.close(fd)


@capability("guest_exec", "net_user", "publish")
@pytest.mark.access_path("network", "e2e")
def test_exec_over_a_published_port_on_nat(cli, guest):
    port = _free_port()
    cli.ok("run", "nat", "--net", "user", "--publish", f"{port}:22", *TCG, timeout=300)
    proc = cli("exec", "nat", "--transport", "network", "--", "sh", "-c", "echo via-nat")
    assert (proc.returncode, proc.stdout) == (0, "via-nat\n"), proc.stderr
    argv = (
        __import__("vmkit.machine")
        .machine.Host(cli.home)
        .get("nat")
        .connection(transport="network")
        .argv()
    )
    assert str(port) in argv and "127.0.0.1" in argv


@capability("guest_exec")
def test_a_host_key_other_than_the_pinned_one_is_refused(cli, guest, tmp_path):
    cli.ok("run", "pin", "--wait-for", "ssh", *TCG, timeout=300)
    vm_dir = cli.home / "vms" / "pin"
    from vmkit.access.ssh import connect
    from vmkit.machine import Host

    connect(Host(cli.home).get("pin")).close_master()
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kt, b64 = other.with_suffix(".pub").read_text().split()[:2]
    (vm_dir / keys.KNOWN_HOSTS).write_text(f"{keys.alias('pin')} {kt} {b64}\n")
    proc = cli("exec", "pin", "--", "true")
    assert proc.returncode == 255
    assert "not the one vmkit made for it" in proc.stderr and "refusing" in proc.stderr


def test_exec_on_a_vm_that_is_not_running_says_so(cli, guest):
    cli.ok("create", "idle", *TCG)
    proc = cli("exec", "idle", "--", "true")
    assert proc.returncode == 255 and "not running" in proc.stderr and "vmkit start" in proc.stderr
    proc = cli("cp", "idle:/etc/passwd", "/tmp/x")
    assert proc.returncode == 255 and "not running" in proc.stderr
    proc = cli("exec", "nosuchvm", "--", "true")
    assert proc.returncode == 2


@capability("guest_copy")
def test_a_vm_killed_mid_copy_leaves_no_partial_file(cli, guest, tmp_path):
    cli.ok("run", "die", "--wait-for", "ssh", *TCG, timeout=300)
    cli.ok("exec", "die", "--", "sh", "-c", "head -c 40000000 /dev/zero > /root/big")
    killer = threading.Timer(3.0, lambda: cli("kill", "die"))
    killer.start()
    proc = cli("cp", "die:/root/big", str(tmp_path / "big"))
    killer.join()
    assert proc.returncode in (1, 255), proc.stderr
    assert "nothing was written" in proc.stderr or "not running" in proc.stderr
    assert not (tmp_path / "big").exists() and not list(tmp_path.glob(".vmkit-cp.*"))


@capability("guest_exec", "snapshot")
def test_a_restored_copy_answers_with_the_pinned_key_under_its_own_name(cli, guest):
    cli.ok("run", "orig", "--wait-for", "ssh", *TCG, timeout=300)
    cli.ok("exec", "orig", "--", "sh", "-c", "echo from-orig > /root/mark")
    cli.ok("snapshot", "create", "orig", "snap", timeout=300)
    cli.ok("restore", "snap", "--name", "copy", timeout=300)
    proc = cli("exec", "copy", "--", "cat", "/root/mark")
    assert (proc.returncode, proc.stdout) == (0, "from-orig\n"), proc.stderr
    pinned = (cli.home / "vms" / "copy" / keys.KNOWN_HOSTS).read_text()
    assert pinned.startswith("vmkit-copy ssh-ed25519 ")


@capability("guest_exec")
def test_a_guest_without_an_ssh_server_is_named_as_such(cli, guest, tmp_path):
    """The tiny guest's initramfs copied elsewhere is not recognised as vmkit's: no key is
    handed over, /init starts no dropbear, and nothing answers on the serial port."""
    initrd = tmp_path / "plain-initramfs.cpio.gz"
    initrd.write_bytes(guest.initrd.read_bytes())
    boot = ("--kernel", str(guest.kernel), "--initrd", str(initrd), "--cmdline", "quiet")
    cli.ok("run", "bare", *boot, *TCG, timeout=300)
    proc = cli("exec", "bare", "--", "true")
    assert proc.returncode == 255 and "no SSH host key pinned by vmkit" in proc.stderr
    from vmkit.storage import sshkeys

    sshkeys.host_key(cli.home / "vms" / "bare", "bare")  # pinned, but the guest has no server
    env = {**cli.env, "VMKIT_SSH_WAIT": "3"}
    proc = subprocess.run([sys.executable, "-m", "vmkit.cli", "exec", "bare", "--", "true"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 255 and "no SSH server answered over serial" in proc.stderr
