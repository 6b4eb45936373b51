"""vmkit: one lifecycle API for real virtual machines.

    import vmkit
    host = vmkit.Host()
    spec = vmkit.spec_from_dict({"name": "demo", "boot": {"kernel": "vmlinux"}})
    status = host.run(spec)          # create + start + wait for readiness
    host.get("demo").stop()          # ACPI power button, then escalation

Names are imported lazily so that `vmkit --version` and `vmkit ls` start fast.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs `vmkit --version` ~5 ms

__version__ = "0.1.0"

_EXPORTS = {
    "Host": "vmkit.machine",
    "Machine": "vmkit.machine",
    "Status": "vmkit.machine",
    "StopResult": "vmkit.machine",
    "MachineSpec": "vmkit.spec",
    "spec_from_dict": "vmkit.spec",
    "load_spec_file": "vmkit.spec",
    "VmkitError": "vmkit.errors",
    "InvalidInput": "vmkit.errors",
    "SpecError": "vmkit.errors",
    "NotFound": "vmkit.errors",
    "NotSupported": "vmkit.errors",
    "ReadinessTimeout": "vmkit.errors",
    "VMFailed": "vmkit.errors",
}

if TYPE_CHECKING:
    from typing import Any

    from vmkit.errors import (
        InvalidInput,
        NotFound,
        NotSupported,
        ReadinessTimeout,
        SpecError,
        VMFailed,
        VmkitError,
    )
    from vmkit.machine import Host, Machine, Status, StopResult
    from vmkit.spec import MachineSpec, load_spec_file, spec_from_dict


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vmkit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "Host",
    "InvalidInput",
    "Machine",
    "MachineSpec",
    "NotFound",
    "NotSupported",
    "ReadinessTimeout",
    "SpecError",
    "Status",
    "StopResult",
    "VMFailed",
    "VmkitError",
    "__version__",
    "load_spec_file",
    "spec_from_dict",
]
