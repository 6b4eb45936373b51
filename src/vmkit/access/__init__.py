"""Work inside a running guest: `vmkit ssh`, `exec`, `cp` and their Python API.

keys (per-VM host key, pinned), boot (the tiny guest's key archive), transport (which path
reaches the guest's SSH server), proxy (the ProxyCommand), ssh (argv and the multiplexed
connection), execute (commands), copy (files).
"""

from __future__ import annotations

TYPE_CHECKING = False  # names load on first use: `vmkit ls` imports this package, not ssh
if TYPE_CHECKING:
    from typing import Any

    from vmkit.access.execute import ExecResult, ExecStream
    from vmkit.access.ssh import AccessError, HostKeyMismatch, NoSSHServer

_EXPORTS = {
    "ExecResult": "vmkit.access.execute",
    "ExecStream": "vmkit.access.execute",
    "AccessError": "vmkit.access.ssh",
    "HostKeyMismatch": "vmkit.access.ssh",
    "NoSSHServer": "vmkit.access.ssh",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vmkit.access' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["AccessError", "ExecResult", "ExecStream", "HostKeyMismatch", "NoSSHServer"]
