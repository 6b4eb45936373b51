"""Published ports: say clearly which host port is taken before the VMM tries to bind it.

QEMU's hostfwd binds the host port itself and cannot take a bound socket from vmkit, so the
check binds and releases just before launch; a process that grabs the port in between makes
QEMU fail, and that failure is reported with QEMU's own message from vmm.log.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from vmkit.errors import InvalidInput


def published(spec_json: dict[str, Any]) -> list[tuple[str, int, int, str]]:
    from vmkit.spec import parse_publish

    out = []
    for net in spec_json.get("networks", []):
        for item in net.get("publish", []):
            out.append(parse_publish(item))
    return out


def check_free(spec_json: dict[str, Any]) -> None:
    for host_ip, host, guest, proto in published(spec_json):
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as s:
            if proto == "tcp":  # as QEMU and the relay bind: old connections in TIME_WAIT
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # do not count
            try:
                s.bind((host_ip, host))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise InvalidInput(
                        f"cannot publish {host_ip}:{host}/{proto} -> guest port {guest}: the "
                        "host port is in use; pick another HOST_PORT (see `ss -ltnp`)"
                    ) from None
                if exc.errno == errno.EACCES:
                    raise InvalidInput(
                        f"cannot publish {host_ip}:{host}/{proto}: ports below 1024 need root; "
                        "pick a HOST_PORT >= 1024"
                    ) from None
                raise InvalidInput(f"cannot publish {host_ip}:{host}/{proto}: {exc}") from None
