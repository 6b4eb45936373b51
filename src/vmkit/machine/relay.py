"""The port relay's process entry point (`python -m vmkit.machine.relay`): net/portfwd does
the relaying; this gives it the guest's current address from the VM's status."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path


def guest_ip_of(home: Path, vm: str) -> str | None:
    from vmkit.machine.host import Host

    with contextlib.suppress(Exception):
        return Host(home).get(vm).status().ip
    return None


if __name__ == "__main__":
    from vmkit.net import portfwd

    sys.exit(portfwd.main(sys.argv[1:], guest_ip_of))
