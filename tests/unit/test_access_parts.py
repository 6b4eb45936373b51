"""vmkit/access without a VM: the remote command line (run by a real sh), ssh's options,
the per-VM key and its archive, and the ProxyCommand against test doubles of the guest side
(a Unix socket server speaking what the guest's bridge or the VMM speaks)."""

from __future__ import annotations

import gzip
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vmkit.access import boot, execute, proxy, transport
from vmkit.access.ssh import Connection, HostKeyMismatch, NoSSHServer, classify
from vmkit.errors import InvalidInput, NotSupported
from vmkit.storage import sshkeys as keys


def test_the_remote_script_runs_each_word_literally_in_a_real_shell(tmp_path):
    evil = ["printf", "%s|", "$(touch pwned)", "a b", "it's", ";", "`id`", "*"]
    script = execute.remote_script(evil, {"X": "1 $HOME"}, str(tmp_path), announce=True)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd="/")
    assert proc.stdout == "$(touch pwned)|a b|it's|;|`id`|*|"
    assert proc.stderr.startswith("VMKIT_PID ")
    assert not (tmp_path / "pwned").exists() and not Path("/pwned").exists()
    env_script = execute.remote_script(["sh", "-c", 'echo "$X"'], {"X": "1 $HOME"})
    out = subprocess.run(["sh", "-c", env_script], capture_output=True, text=True)
    assert out.stdout == "1 $HOME\n"
    missing = execute.remote_script(["true"], workdir=str(tmp_path / "no"))
    assert subprocess.run(["sh", "-c", missing], capture_output=True).returncode == 126
    nothing = execute.remote_script(["no-such-command-vmkit"], announce=False)
    assert subprocess.run(["sh", "-c", nothing], capture_output=True).returncode == 127


def test_env_names_are_checked():
    assert execute.parse_env(["A=1", "B_2=x=y", "C="]) == {"A": "1", "B_2": "x=y", "C": ""}
    for bad in ("1A=x", "A", "A-B=1", "=1"):
        with pytest.raises(InvalidInput, match="--env"):
            execute.parse_env([bad])
    with pytest.raises(InvalidInput):
        execute.remote_script([])


def _conn(tmp_path: Path, target: transport.Target) -> Connection:
    return Connection("vm", tmp_path / "d%ir", "root", target, tmp_path / "id", tmp_path / "c.mux")


def test_ssh_options_pin_the_key_and_escape_percent(tmp_path):
    target = transport.serial_target("vm", "/run/x%y.ssh")
    argv = _conn(tmp_path, target).argv(["true"], master="no")
    opts = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
    assert "StrictHostKeyChecking=yes" in opts and "HostKeyAlias=vmkit-vm" in opts
    assert f"UserKnownHostsFile={tmp_path}/d%%ir/known_hosts" in opts
    assert "GlobalKnownHostsFile=/dev/null" in opts and "ControlMaster=no" in opts
    proxy_opt = next(o for o in opts if o.startswith("ProxyCommand="))
    assert "/run/x%%y.ssh" in proxy_opt and "proxy.py serial" in proxy_opt
    assert not any("=no" in o and "Strict" in o for o in opts)
    assert argv[:3] == [argv[0], "-F", "/dev/null"] and argv[-3:] == ["vmkit-vm", "--", "true"]


def test_network_target_prefers_a_published_port_and_refuses_without_a_path():
    ports = [{"guest": 80, "host": 8080, "host_ip": "127.0.0.1", "proto": "tcp"},
             {"guest": 22, "host": 2222, "host_ip": "0.0.0.0", "proto": "tcp"}]  # fmt: skip
    t = transport.network_target({"networks": [{"mode": "user"}]}, ports, None, "vm")
    assert (t.kind, t.address, t.port) == ("network", "127.0.0.1", 2222)
    t = transport.network_target({"networks": [{"mode": "tap", "tap": "t0"}]}, [], "10.0.0.5", "vm")
    assert (t.address, t.port) == ("10.0.0.5", 22)
    with pytest.raises(NotSupported, match="port add vm 2222:22"):
        transport.network_target({"networks": [{"mode": "user"}]}, ports[:1], "10.0.2.15", "vm")


def test_ssh_failures_become_specific_errors(tmp_path):
    conn = _conn(tmp_path, transport.serial_target("vm", "/s"))
    err = classify(conn, "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n")
    assert isinstance(err, HostKeyMismatch) and err.exit_code == 255
    err = classify(conn, f"{proxy.PREFIX} {proxy.NO_ANSWER}: nothing answered\n")
    assert isinstance(err, NoSSHServer) and "no SSH server" in str(err)
    assert "refused vmkit's key" in str(classify(conn, "root@x: Permission denied (publickey)."))
    gone = f"{proxy.PREFIX} {proxy.NO_SOCKET}: cannot connect\n"
    assert "its VMM socket is gone (serial (/s))" in str(classify(conn, gone))
    for target in (transport.unix_vsock_target("vm", "/v"), transport.af_vsock_target("vm", 7)):
        err = classify(_conn(tmp_path, target), f"{proxy.PREFIX} {proxy.NO_ANSWER}: x\n")
        assert isinstance(err, NoSSHServer) and "vsock port 22, which the guest" in str(err)
    err = classify(_conn(tmp_path, transport.af_vsock_target("vm", 7)), gone)
    assert "vsock (CID 7 port 22): this host has no AF_VSOCK sockets" in str(err)
    err = classify(_conn(tmp_path, transport.unix_vsock_target("vm", "/v")), gone)
    assert "its VMM socket is gone (vsock (/v))" in str(err)


def test_host_key_is_private_and_pinned_and_travels_as_a_file(tmp_path):
    key = keys.host_key(tmp_path, "vm")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    line = (tmp_path / keys.KNOWN_HOSTS).read_text()
    assert line == f"vmkit-vm {keys.public_key(tmp_path)}\n".replace(" vmkit-vm\n", "\n")
    assert keys.host_key(tmp_path, "vm").read_bytes() == key.read_bytes()  # made once
    base = gzip.compress(b"070701base-archive", mtime=0)
    (tmp_path / "initramfs.cpio.gz").write_bytes(base)
    out = boot.guest_initrd(tmp_path, "vm", tmp_path / "initramfs.cpio.gz", "ssh-ed25519 AAAA c")
    data = out.read_bytes()
    assert data.startswith(base) and stat.S_IMODE(out.stat().st_mode) == 0o600
    archive = gzip.decompress(data[len(base) :])
    names = {}
    pos = 0
    while True:  # newc: 110-byte header, name, pad to 4, data, pad to 4
        head = archive[pos : pos + 110]
        mode, size, namesize = int(head[14:22], 16), int(head[54:62], 16), int(head[94:102], 16)
        name = archive[pos + 110 : pos + 110 + namesize - 1].decode()
        start = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            break
        names[name] = (stat.S_IMODE(mode), archive[start : start + size])
        pos = (start + size + 3) & ~3
    assert names[boot.GUEST_KEY_PATH] == (0o600, key.read_bytes())
    assert names["root/.ssh/authorized_keys"] == (0o600, b"ssh-ed25519 AAAA c\n")
    assert names["root/.ssh"][0] == 0o700

    # made once per change of its parts, not at every start
    made = out.stat().st_ino
    again = boot.guest_initrd(tmp_path, "vm", tmp_path / "initramfs.cpio.gz", "ssh-ed25519 AAAA c")
    assert again.stat().st_ino == made and again.read_bytes() == data
    other = boot.guest_initrd(tmp_path, "vm", tmp_path / "initramfs.cpio.gz", "ssh-ed25519 BBBB d")
    assert other.stat().st_ino != made and b"BBBB" in gzip.decompress(
        other.read_bytes()[len(base) :]
    )
    (tmp_path / "initramfs.cpio.gz").write_bytes(base + base)  # a rebuilt guest
    newer = boot.guest_initrd(tmp_path, "vm", tmp_path / "initramfs.cpio.gz", "ssh-ed25519 BBBB d")
    assert newer.read_bytes().startswith(base + base)


def _serve_once(path: Path, handler) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            handler(conn)
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _recv_until(conn: socket.socket, end: bytes) -> bytes:
    buf = b""
    while not buf.endswith(end):
        chunk = conn.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf


def _run_proxy(*args: str, stdin: bytes, env: dict[str, str] | None = None):
    argv = [sys.executable, "-I", "-S", str(transport.PROXY), *args]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=30,
                          env={**os.environ, **(env or {})})  # fmt: skip


def test_serial_proxy_says_hello_and_waits_for_the_server_to_speak(tmp_path):
    """Test double: the guest's init.sh bridge (reads `vmkit-ssh`, then the SSH server
    speaks first)."""
    seen: list[bytes] = []

    def guest(conn: socket.socket) -> None:
        seen.append(_recv_until(conn, b"\n"))
        conn.sendall(b"SSH-2.0-double\r\n")
        seen.append(_recv_until(conn, b"client-bytes"))
        conn.sendall(b"reply")

    t = _serve_once(tmp_path / "s", guest)
    proc = _run_proxy("serial", str(tmp_path / "s"), stdin=b"client-bytes")
    t.join(10)
    assert seen == [b"vmkit-ssh\n", b"client-bytes"]
    assert proc.returncode == 0 and proc.stdout == b"SSH-2.0-double\r\nreply"


def test_serial_proxy_reports_a_guest_that_never_answers(tmp_path):
    t = _serve_once(tmp_path / "s", lambda conn: _recv_until(conn, b"never"))
    log = tmp_path / "proxy.log"  # ssh gives a ControlPersist master's proxy no stderr
    proc = _run_proxy("--log", str(log), "serial", str(tmp_path / "s"), stdin=b"",
                      env={"VMKIT_SSH_WAIT": "0.5"})  # fmt: skip
    assert proc.returncode == 1 and b"vmkit-proxy: no-answer" in proc.stderr
    assert log.read_text().startswith("vmkit-proxy: no-answer")
    del t
    proc = _run_proxy("serial", str(tmp_path / "gone"), stdin=b"")
    assert proc.returncode == 1 and b"vmkit-proxy: no-socket" in proc.stderr


@pytest.mark.capability("cloud-hypervisor", "guest_exec", "guest_copy")
@pytest.mark.access_path("ch-hybrid-vsock", "contract")
def test_hybrid_vsock_proxy_speaks_cloud_hypervisors_connect_handshake(tmp_path):
    """Test double: Cloud Hypervisor's hybrid vsock socket as its docs (vsock.md) describe:
    the host writes `CONNECT <port>\\n`, the VMM answers `OK <host port>\\n`, then bytes flow
    to the guest's port."""
    seen: list[bytes] = []

    def vmm(conn: socket.socket) -> None:
        seen.append(_recv_until(conn, b"\n"))
        conn.sendall(b"OK 1073741824\nSSH-2.0-in-guest\r\n")
        seen.append(_recv_until(conn, b"hello"))

    t = _serve_once(tmp_path / "v", vmm)
    proc = _run_proxy("hybrid-vsock", str(tmp_path / "v"), "22", stdin=b"hello")
    t.join(10)
    assert seen == [b"CONNECT 22\n", b"hello"]
    assert proc.stdout == b"SSH-2.0-in-guest\r\n"

    t = _serve_once(tmp_path / "w", lambda c: (_recv_until(c, b"\n"), c.sendall(b"ERR\n")))
    proc = _run_proxy("hybrid-vsock", str(tmp_path / "w"), "22", stdin=b"")
    assert proc.returncode == 1 and b"vsock port 22" in proc.stderr
    target = transport.hybrid_vsock_target("vm", str(tmp_path / "v"))
    assert target.kind == "vsock" and target.proxy is not None
    assert target.proxy[-3:] == ["hybrid-vsock", str(tmp_path / "v"), "22"]


@pytest.mark.access_path("vfkit-vsock", "contract")
@pytest.mark.access_path("krunkit-vsock", "contract")
def test_unix_proxy_waits_for_the_guest_port_behind_vfkits_socket(tmp_path):
    """vfkit's `connect` socket accepts at once and dials the guest's port; a guest not yet
    listening shows as a connection closed before the SSH server spoke (and libkrun's first
    connection after boot ends so too): the proxy dials again until the server speaks."""
    attempts: list[int] = []
    path = str(tmp_path / "vs22")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()

    def vmm() -> None:
        for n in range(3):
            conn, _ = srv.accept()
            attempts.append(n)
            with conn:
                if n == 2:  # the guest's sshd is up now
                    conn.sendall(b"SSH-2.0-guest\r\n")
                    _recv_until(conn, b"hi")

    t = threading.Thread(target=vmm, daemon=True)
    t.start()
    proc = _run_proxy("unix", path, stdin=b"hi", env={"VMKIT_SSH_WAIT": "10"})
    t.join(10)
    assert attempts == [0, 1, 2] and proc.stdout == b"SSH-2.0-guest\r\n", proc.stderr

    def no_guest_port() -> None:  # vfkit up, nothing on the guest's port: each one closes
        while True:
            try:
                srv.accept()[0].close()
            except OSError:
                return

    threading.Thread(target=no_guest_port, daemon=True).start()
    proc = _run_proxy("unix", path, stdin=b"", env={"VMKIT_SSH_WAIT": "0.5"})
    assert proc.returncode == 1 and b"vmkit-proxy: no-answer" in proc.stderr
    srv.close()
    proc = _run_proxy("unix", str(tmp_path / "gone"), stdin=b"")
    assert proc.returncode == 1 and b"vmkit-proxy: no-socket" in proc.stderr


@pytest.mark.access_path("qemu-vhost-vsock", "contract")
def test_vsock_proxy_dials_the_guest_cid_with_the_hosts_af_vsock():
    """The host kernel's own AF_VSOCK (real here; no VM has CID 7, and this host has no
    vhost_vsock, so nothing answers): a clear no-answer naming the CID and port."""
    target = transport.af_vsock_target("vm", 7)
    assert target.kind == "vsock" and target.proxy is not None
    assert target.proxy[-3:] == ["vsock", "7", "22"]
    assert target.describe() == "vsock (CID 7 port 22)"
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError as exc:
        pytest.skip(f"no AF_VSOCK sockets on this host: {exc}")
    proc = _run_proxy("vsock", "7", "22", stdin=b"", env={"VMKIT_SSH_WAIT": "1"})
    assert proc.returncode == 1, proc.stderr
    assert re.match(rb"vmkit-proxy: no-answer: vsock CID 7 port 22: \S", proc.stderr)


def test_the_proxy_imports_nothing_from_vmkit():
    text = transport.PROXY.read_text()
    assert "import vmkit" not in text and "from vmkit" not in text
