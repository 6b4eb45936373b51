"""OpenSSH client argv for a VM, and its one multiplexed connection.

Every option ssh gets is explicit (`-F /dev/null`: a user's ~/.ssh/config cannot change
what vmkit connects to or trusts): vmkit's per-host key only, the VM's own known_hosts with
StrictHostKeyChecking=yes under the alias `vmkit-NAME`, BatchMode. One master connection per
VM and user (ControlMaster, ControlPersist) lives on a control socket in vmkit's private
runtime dir (0700); it ends when its transport closes, i.e. with the VM. vmkit's own exec/cp
start the master under a lock first, then run with ControlMaster=no, so two concurrent
commands never race to open a second connection on a one-connection transport.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vmkit.access import fastexec, proxy
from vmkit.access.transport import PROXY_LOG, Target, select_target
from vmkit.errors import InvalidInput, NotSupported, VmkitError, VMStateError
from vmkit.paths import runtime_dir
from vmkit.storage import sshkeys as keys

if TYPE_CHECKING:
    from vmkit.machine import Machine

MASTER_LOG = "ssh-master.log"


class AccessError(VmkitError):
    """vmkit could not reach the guest's SSH server (exit 255, as ssh itself)."""

    exit_code = 255


class HostKeyMismatch(AccessError):
    pass


class NotRunning(AccessError, VMStateError):
    """There is no running guest to reach."""


class NoSSHServer(AccessError):
    pass


def _pct(value: str | Path) -> str:
    """ssh expands %-tokens in these options: a literal % is %%."""
    return str(value).replace("%", "%%")


@dataclass
class Connection:
    """Everything needed to run ssh against one VM."""

    name: str
    vm_dir: Path
    user: str
    target: Target
    identity: Path
    control: Path
    extra: list[str] = field(default_factory=list)  # the user's own -o options (vmkit ssh)

    @property
    def destination(self) -> str:
        return self.target.address

    def options(self, master: str = "auto") -> list[str]:
        opts = {
            "IdentitiesOnly": "yes",
            "IdentityAgent": "none",
            "UserKnownHostsFile": _pct(self.vm_dir / keys.KNOWN_HOSTS),
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "HostKeyAlias": keys.alias(self.name),
            "CheckHostIP": "no",
            "UpdateHostKeys": "no",
            "BatchMode": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "LogLevel": "ERROR",
            "ConnectTimeout": "30",
            "ServerAliveInterval": "10",
            "ServerAliveCountMax": "6",
            "ControlPath": _pct(self.control),
            "ControlMaster": master,
            "ControlPersist": "yes",
        }
        if self.target.proxy:
            opts["ProxyCommand"] = _pct(shlex.join(self.target.proxy))
        argv = ["-F", "/dev/null", "-i", _pct(self.identity), "-l", self.user]
        argv += ["-p", str(self.target.port)]
        for key, value in opts.items():
            argv += ["-o", f"{key}={value}"]
        return argv + self.extra

    def argv(
        self, remote: list[str] | None = None, flags: tuple[str, ...] = (), master: str = "auto"
    ) -> list[str]:
        cmd = [ssh_binary(), *self.options(master), *flags, self.destination]
        if remote:
            cmd += ["--", *remote]
        return cmd

    # ---- the master connection ----------------------------------------------------------
    def master_alive(self) -> bool:
        """A master listens on the control socket (a connect, not an `ssh -O check` process:
        this is on every exec's path)."""

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.control))
            except OSError:
                return False
        return True

    def ensure_master(self, wait: float = 0.0) -> None:
        """Open the VM's multiplexed connection unless it is up; retry for `wait` seconds
        while the guest's SSH server does not answer yet (a guest still booting)."""
        from vmkit.store import file_lock

        if self.master_alive():
            return
        lock = self.control.with_suffix(".lock")
        with file_lock(lock, 120.0, f"the SSH connection to VM {self.name!r}"):
            deadline = time.monotonic() + wait
            while not self.master_alive():
                try:
                    self._start_master()
                    return
                except (NoSSHServer, AccessError) as exc:
                    if isinstance(exc, HostKeyMismatch) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.5)

    def _start_master(self) -> None:
        self.control.unlink(missing_ok=True)  # a dead master's socket
        log = self.vm_dir / MASTER_LOG
        proxy_log = self.vm_dir / PROXY_LOG
        proxy_log.unlink(missing_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            # -f: ssh backgrounds once authenticated; stderr goes to a file because the
            # background master keeps it open for its whole life.
            proc = subprocess.run(
                [ssh_binary(), *self.options("yes"), "-f", "-N", self.destination],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=fd,
                check=False,
            )
        finally:
            os.close(fd)
        if proc.returncode != 0:
            text = log.read_text(errors="replace")
            with contextlib.suppress(OSError):
                text = proxy_log.read_text(errors="replace") + text
            raise classify(self, text)

    def close_master(self) -> None:
        if self.control.exists():
            subprocess.run(
                [ssh_binary(), *self.options("no"), "-O", "exit", self.destination],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )


def classify(conn: Connection, stderr: str) -> AccessError:
    """ssh's failure, as a vmkit message that names the cause and the fix."""
    how = conn.target.describe()
    tail = "; ".join(line for line in stderr.strip().splitlines()[-3:] if line.strip())
    if "Host key verification failed" in stderr or "IDENTIFICATION HAS CHANGED" in stderr:
        return HostKeyMismatch(
            f"VM {conn.name!r} presented an SSH host key that is not the one vmkit made for it "
            f"(pinned in {conn.vm_dir / keys.KNOWN_HOSTS}); refusing to connect. A guest that "
            "was re-keyed or a different machine answering: recreate the VM, or restore its key"
        )
    af_vsock = "vsock" in (conn.target.proxy or [])  # QEMU's path: no VMM socket, AF_VSOCK
    if f"{proxy.PREFIX} {proxy.NO_SOCKET}" in stderr and af_vsock:
        return AccessError(f"VM {conn.name!r}: {how}: this host has no AF_VSOCK sockets")
    if f"{proxy.PREFIX} {proxy.NO_SOCKET}" in stderr:
        return AccessError(f"VM {conn.name!r}: its VMM socket is gone ({how}): is it running?")
    if f"{proxy.PREFIX} {proxy.NO_ANSWER}" in stderr and conn.target.kind == "vsock":
        return NoSSHServer(
            f"VM {conn.name!r}: no SSH server answered over {how}. vsock_cid routes SSH over "
            "vsock port 22, which the guest must serve (systemd >= 256 binds sshd there by "
            "itself; the tiny guest does not): remove vsock_cid to use virtio-serial or the "
            "network, or `--transport serial|network`"
        )
    if f"{proxy.PREFIX} {proxy.NO_ANSWER}" in stderr:
        return NoSSHServer(
            f"VM {conn.name!r}: no SSH server answered over {how}. The tiny guest has one "
            "(built by this vmkit: `vmkit guest build`, then recreate the VM); your own image "
            "needs sshd running and vmkit's key authorized (cloud-init does both)"
        )
    if "Connection refused" in stderr or "Connection timed out" in stderr:
        return NoSSHServer(f"VM {conn.name!r}: no SSH server reachable at {how} ({tail})")
    if "Permission denied" in stderr:
        return AccessError(
            f"VM {conn.name!r}: the guest refused vmkit's key ({conn.identity}) for user "
            f"{conn.user!r} over {how}: authorize {conn.identity}.pub in the guest"
        )
    return AccessError(f"VM {conn.name!r}: ssh over {how} failed: {tail or 'no message'}")


def ssh_binary() -> str:
    found = shutil.which("ssh")
    if found is None:
        raise VmkitError("`ssh` not found: install the OpenSSH client (openssh-client)")
    return found


def control_path(store_home: Path, name: str, user: str, kind: str) -> Path:
    key = hashlib.sha256(f"{store_home.absolute()}\0{name}\0{user}\0{kind}".encode())
    return runtime_dir() / f"{key.hexdigest()[:12]}.mux"


def default_user(machine: Machine) -> str:
    ci = machine.spec_json.get("cloud_init")
    if ci is not None:
        return str(ci.get("user") or "vmkit")
    return "root"


def connect(
    machine: Machine,
    user: str | None = None,
    transport: str | None = None,
    extra: list[str] | None = None,
) -> Connection:
    """The Connection for a running VM (no network traffic yet)."""
    from vmkit.storage.seed import host_key as client_key

    if not machine.driver.capabilities.guest_exec:
        raise NotSupported(
            f"the {machine.driver_name} driver cannot reach the guest over SSH yet (VM "
            f"{machine.name!r}); see docs/capabilities.md"
        )
    st = machine.status()
    if not st.alive:
        raise NotRunning(
            f"VM {machine.name!r} is {st.state}, not running: start it with "
            f"`vmkit start {machine.name}`"
        )
    if st.state == "paused":
        raise NotRunning(f"VM {machine.name!r} is paused: `vmkit resume {machine.name}` first")
    pinned = machine.dir / keys.KNOWN_HOSTS
    if pinned.exists() and not pinned.read_text().startswith(keys.alias(machine.name) + " "):
        keys.pin(machine.dir, machine.name)  # a restored or migrated copy: same key, new name
    if not pinned.exists():
        raise NoSSHServer(
            f"VM {machine.name!r} has no SSH host key pinned by vmkit: it was made by an older "
            "vmkit or boots a guest vmkit cannot hand a key to; recreate it"
        )
    user = user or default_user(machine)
    if not user or any(c in user for c in " \t\n%@:/") or user.startswith("-"):
        raise InvalidInput(f"--user: {user!r} is not a user name")
    target = select_target(machine, st, transport)
    conn = Connection(
        name=machine.name,
        vm_dir=machine.dir,
        user=user,
        target=target,
        identity=client_key(machine.store.home),
        control=control_path(machine.store.home, machine.name, user, target.kind),
        extra=list(extra or []),
    )
    if user == default_user(machine) and transport is None and not extra and st.pid is not None:
        fastexec.remember(machine.dir, st.pid, conn.argv(flags=("-T",), master="no"), conn.control)
    return conn
