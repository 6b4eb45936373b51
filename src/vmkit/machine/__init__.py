"""The lifecycle API: `Host` (the VMs of one store) and `Machine` (one VM).

Names are imported on first use, so that `vmkit ls` can load `machine.view` and
`machine.status` without the rest (facade, drivers, helpers)."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs `vmkit ls` ~5 ms

_EXPORTS = {
    "ALIVE_STATES": "vmkit.model",
    "LIVE_STATES": "vmkit.model",
    "State": "vmkit.model",
    "GcReport": "vmkit.machine.gc",
    "Host": "vmkit.machine.host",
    "Machine": "vmkit.machine.facade",
    "Status": "vmkit.machine.status",
    "StopResult": "vmkit.machine.stopping",
}

if TYPE_CHECKING:
    from typing import Any

    from vmkit.machine.facade import Machine
    from vmkit.machine.gc import GcReport
    from vmkit.machine.host import Host
    from vmkit.machine.status import Status
    from vmkit.machine.stopping import StopResult
    from vmkit.model import ALIVE_STATES, LIVE_STATES, State


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vmkit.machine' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ALIVE_STATES",
    "LIVE_STATES",
    "GcReport",
    "Host",
    "Machine",
    "State",
    "Status",
    "StopResult",
]
