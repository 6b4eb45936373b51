"""Which path reaches a VM's SSH server, best first.

- `vsock`, when the spec has `vsock_cid` (the guest must serve SSH on vsock port 22: systemd
  >= 256 does, the tiny guest does not): Cloud Hypervisor's hybrid vsock (its Unix socket,
  `CONNECT 22` handshake); vfkit's and krunkit's `virtio-vsock,port=22,...,connect` socket;
  QEMU's vhost-vsock (AF_VSOCK to the guest's CID).
- `serial`: QEMU's virtio-serial port `org.vmkit.ssh` (guest/init.sh bridges it to the tiny
  guest's dropbear); works with `--net none`.
- `network`: a published host port forwarding to guest port 22 (NAT), else the guest's own
  address on a TAP or switch NIC the host can reach.

The `serial` and `vsock` paths go through vmkit's ProxyCommand (access/proxy.py), run by the
same Python without site packages (it imports nothing from vmkit).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmkit.errors import InvalidInput, NotSupported
from vmkit.storage.sshkeys import alias

if TYPE_CHECKING:
    from vmkit.machine import Machine, Status

KINDS = ("vsock", "serial", "network")
SSH_PORT = 22
PROXY = Path(__file__).with_name("proxy.py")
PROXY_LOG = "ssh-proxy.log"  # the ProxyCommand's errors (a master's stderr goes nowhere)


@dataclass(frozen=True)
class Target:
    kind: str  # vsock | serial | network
    address: str  # what ssh is told to connect to (the alias for proxied paths)
    port: int = SSH_PORT
    proxy: list[str] | None = None  # ProxyCommand argv
    via: str = ""  # for messages: the socket or address

    def describe(self) -> str:
        return f"{self.kind} ({self.via})" if self.via else self.kind


def proxy_argv(*args: str, log: Path | None = None) -> list[str]:
    return [sys.executable, "-I", "-S", str(PROXY), *(("--log", str(log)) if log else ()), *args]


def serial_target(name: str, socket_path: str, log: Path | None = None) -> Target:
    argv = proxy_argv("serial", socket_path, log=log)
    return Target("serial", alias(name), proxy=argv, via=socket_path)


def hybrid_vsock_target(
    name: str, socket_path: str, port: int = SSH_PORT, log: Path | None = None
) -> Target:
    argv = proxy_argv("hybrid-vsock", socket_path, str(port), log=log)
    return Target("vsock", alias(name), proxy=argv, via=f"{socket_path} port {port}")


def unix_vsock_target(name: str, socket_path: str, log: Path | None = None) -> Target:
    """vfkit: a `virtio-vsock,port=22,socketURL=PATH,connect` device gives one Unix socket
    per guest port; connecting to it is connecting to the guest's port."""
    argv = proxy_argv("unix", socket_path, log=log)
    return Target("vsock", alias(name), proxy=argv, via=socket_path)


def af_vsock_target(name: str, cid: int, port: int = SSH_PORT, log: Path | None = None) -> Target:
    """QEMU's vhost-vsock: the guest is CID `cid` in the host's own AF_VSOCK space."""
    argv = proxy_argv("vsock", str(cid), str(port), log=log)
    return Target("vsock", alias(name), proxy=argv, via=f"CID {cid} port {port}")


def network_target(
    record_spec: dict[str, Any], ports: list[dict[str, Any]], ip: str | None, name: str
) -> Target:
    """A host port published to guest port 22, else the guest's address on a NIC the host
    routes to (TAP in the host's namespace, or a reported address)."""
    for p in ports:
        if p.get("guest") == SSH_PORT and p.get("proto", "tcp") == "tcp":
            host_ip = p.get("host_ip") or "127.0.0.1"
            host_ip = "127.0.0.1" if host_ip in ("0.0.0.0", "") else host_ip  # noqa: S104
            return Target("network", host_ip, int(p["host"]), via=f"{host_ip}:{p['host']}")
    nets = record_spec.get("networks", [])
    reachable = any(n.get("mode") == "tap" and not n.get("netns") for n in nets)
    if ip and ip != "-" and reachable:
        return Target("network", ip, SSH_PORT, via=f"{ip}:{SSH_PORT}")
    raise NotSupported(
        f"VM {name!r} has no network path to its SSH server: publish guest port 22 "
        f"(`vmkit port add {name} 2222:22`, or `--publish 2222:22` at create), or use a TAP "
        "NIC in the host's namespace"
    )


def select_target(machine: Machine, status: Status, prefer: str | None = None) -> Target:
    if prefer is not None and prefer not in KINDS:
        raise InvalidInput(f"--transport: {prefer!r} is not one of {', '.join(KINDS)}")
    sockets = machine.runtime().sockets
    spec = machine.spec_json
    driver = machine.driver_name
    found: dict[str, Target] = {}
    log = machine.dir / PROXY_LOG
    if driver == "cloud-hypervisor" and "vsock" in sockets:
        found["vsock"] = hybrid_vsock_target(machine.name, sockets["vsock"], log=log)
    if driver in ("vfkit", "krunkit") and "vsock-ssh" in sockets:
        found["vsock"] = unix_vsock_target(machine.name, sockets["vsock-ssh"], log=log)
    if driver == "qemu" and spec.get("vsock_cid") is not None:  # the plan added vhost-vsock
        found["vsock"] = af_vsock_target(machine.name, int(spec["vsock_cid"]), log=log)
    if "ssh" in sockets:
        found["serial"] = serial_target(machine.name, sockets["ssh"], log=log)
    for kind in [prefer] if prefer else [k for k in KINDS if k != "network"]:
        if kind in found:
            return found[kind]
    if prefer in (None, "network"):
        return network_target(spec, machine.ports(), status.ip, machine.name)
    raise NotSupported(
        f"--transport {prefer}: VM {machine.name!r} ({driver}) has no {prefer} path to its "
        f"SSH server; it has: {', '.join([*found, 'network'])}"
    )
