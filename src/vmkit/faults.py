"""Named fault points, for the crash tests: with VMKIT_FAULT=NAME, vmkit kills itself
(SIGKILL, as a crash or `kill -9` would) on reaching the point NAME. Unset, a point costs
one dictionary lookup."""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    if os.environ.get("VMKIT_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
