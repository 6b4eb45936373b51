"""The lifecycle API: `Host` (the VMs of one store) and `Machine` (one VM)."""

from vmkit.machine.facade import Machine
from vmkit.machine.gc import GcReport
from vmkit.machine.host import Host
from vmkit.machine.status import Status
from vmkit.machine.stopping import StopResult
from vmkit.model import ALIVE_STATES, LIVE_STATES, State

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
