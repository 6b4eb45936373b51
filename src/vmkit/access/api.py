"""Machine's public methods for work inside the guest, mixed into machine.facade.Machine
(kept here so the facade stays small; everything is imported on first use)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from vmkit.access.execute import ExecResult, ExecStream
    from vmkit.access.ssh import Connection
    from vmkit.machine import Machine


class GuestAccess:
    def connection(self, user: str | None = None, transport: str | None = None) -> Connection:
        """The VM's SSH connection, its multiplexed master opened."""
        from vmkit.access.ssh import connect

        conn = connect(cast("Machine", self), user, transport)
        conn.ensure_master()
        return conn

    def exec(
        self,
        argv: list[str],
        input: bytes | None = None,
        timeout: float | None = None,
        user: str | None = None,
        **kw: Any,
    ) -> ExecResult:
        """Run `argv` in the guest to completion: exit code, stdout, stderr."""
        from vmkit.access.execute import run

        return run(self.connection(user), argv, input=input, timeout=timeout, **kw)

    def exec_stream(self, argv: list[str], user: str | None = None, **kw: Any) -> ExecStream:
        """Start `argv` in the guest: `.stdin`/`.stdout`/`.stderr`, `.wait()`, `.send_signal()`."""
        from vmkit.access.execute import ExecStream

        return ExecStream(self.connection(user), argv, **kw)

    def copy_in(self, src: Path, dst: str, progress: Any = None) -> None:
        """Host file or folder `src` to guest path `dst`."""
        from vmkit.access.copy import copy_in

        copy_in(self.connection(), Path(src), dst, progress)

    def copy_out(self, src: str, dst: Path, progress: Any = None) -> Path:
        """Guest file or folder `src` to host path `dst`; returns the path written."""
        from vmkit.access.copy import copy_out

        return copy_out(self.connection(), src, Path(dst), progress)

    def ssh_command(self, user: str | None = None) -> list[str]:
        """The exact ssh argv vmkit uses (append `--` and a remote command to run one)."""
        return list(self.connection(user).argv())
