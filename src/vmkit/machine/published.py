"""Published ports of a running VM: those in its spec, and those added while it runs
(through the VMM's own forwarding: QEMU's hostfwd). Uses only Machine's public API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmkit.drivers.abilities import PortForwarder
from vmkit.errors import InvalidInput

if TYPE_CHECKING:
    from vmkit.machine.facade import Machine


def port_entry(
    nic: int, host_ip: str, host: int, guest: int, proto: str, source: str
) -> dict[str, Any]:
    return {
        "nic": nic,
        "host_ip": host_ip,
        "host": host,
        "guest": guest,
        "proto": proto,
        "source": source,
    }


def ports(machine: Machine) -> list[dict[str, Any]]:
    from vmkit.spec import parse_publish

    out = []
    for i, net in enumerate(machine.spec_json.get("networks", [])):
        for item in net.get("publish", []):
            host_ip, host, guest, proto = parse_publish(item)
            out.append(port_entry(i, host_ip, host, guest, proto, "spec"))
    rt = machine.runtime()
    if rt.process is not None and machine.status().alive:
        out += [dict(p, source="runtime") for p in rt.ports]
    return out


def publish(machine: Machine, value: str) -> dict[str, Any]:
    from vmkit.net import ports as portmod
    from vmkit.spec import parse_publish

    machine.require(PortForwarder, "publish ports")
    try:
        host_ip, host, guest, proto = parse_publish(value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    nats = [
        i
        for i, n in enumerate(machine.spec_json.get("networks", []))
        if n.get("mode") in ("user", "nat")
    ]
    if not nats:
        raise InvalidInput(f"VM {machine.name!r} has no NAT NIC to forward ports through")
    with machine.locked():
        ctl, rt = machine.live_control(PortForwarder, "publish a port on")
        portmod.check_free({"networks": [{"publish": [value]}]})
        ctl.add_port(nats[0], host_ip, host, guest, proto)
        entry = port_entry(nats[0], host_ip, host, guest, proto, "runtime")
        rt.ports = [*rt.ports, entry]
        machine.save_runtime(rt)
    return entry


def unpublish(machine: Machine, value: str) -> dict[str, Any]:
    from vmkit.spec import parse_publish

    machine.require(PortForwarder, "unpublish ports")
    body, _, proto_part = value.partition("/")
    try:  # [IP:]HOST[/proto]: reuse the publish grammar with a dummy guest port
        host_ip, host, _guest, proto = parse_publish(
            f"{body}:1" + (f"/{proto_part}" if proto_part else "")
        )
    except ValueError as exc:
        raise InvalidInput(str(exc).replace(":1", "")) from None
    with machine.locked():
        ctl, rt = machine.live_control(PortForwarder, "unpublish a port on")
        match = [
            p for p in rt.ports if (p["host_ip"], p["host"], p["proto"]) == (host_ip, host, proto)
        ]
        if not match:
            raise InvalidInput(
                f"VM {machine.name!r} has no port {host_ip}:{host}/{proto} added at run time "
                "(ports in the spec stay until the VM stops)"
            )
        ctl.remove_port(match[0]["nic"], host_ip, host, proto)
        rt.ports = [p for p in rt.ports if p not in match]
        machine.save_runtime(rt)
    found: dict[str, Any] = match[0]
    return found
