"""Waiting for a QEMU migration (a snapshot save or load, a live migration) to end."""

from __future__ import annotations

import contextlib
import time

from vmkit.drivers.qmp import QMP, QMPError
from vmkit.errors import VmkitError


def await_migration(q: QMP, what: str, timeout: float) -> None:
    """Block until the migration QEMU runs ends; needs the `events` capability set before
    it started (QEMU then sends a MIGRATION event on each state change)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            event = q.wait_event({"MIGRATION"}, left)
        except (TimeoutError, QMPError) as exc:
            if isinstance(exc, QMPError) and "in time" not in str(exc):
                raise VmkitError(f"QEMU failed {what}: {exc}") from None
            with contextlib.suppress(QMPError):
                q.execute("migrate_cancel")
            raise VmkitError(f"QEMU did not finish {what} within {timeout:g}s") from None
        status = event.get("data", {}).get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            info = q.execute("query-migrate")
            raise VmkitError(f"QEMU failed {what}: {info.get('error-desc', status)}")
