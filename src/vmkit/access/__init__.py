"""Work inside a running guest: `vmkit ssh`, `exec`, `cp` and their Python API.

keys (per-VM host key, pinned), boot (the tiny guest's key archive), transport (which path
reaches the guest's SSH server), proxy (the ProxyCommand), ssh (argv and the multiplexed
connection), execute (commands), copy (files).
"""

from __future__ import annotations

from vmkit.access.execute import ExecResult, ExecStream
from vmkit.access.ssh import AccessError, HostKeyMismatch, NoSSHServer

__all__ = ["AccessError", "ExecResult", "ExecStream", "HostKeyMismatch", "NoSSHServer"]
