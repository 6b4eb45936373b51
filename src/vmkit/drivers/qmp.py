"""A small synchronous QMP client with timeouts, on top of QEMU's own qemu.qmp library.

(qemu.qmp's legacy sync shim has no connect timeout; a hung QEMU must not hang vmkit.)
QEMU's QMP socket serves one client at a time, so connections are short-lived.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from vmkit.errors import VmkitError

logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QMPError(VmkitError):
    pass


class QMP:
    def __init__(self, path: Path | str, timeout: float = 5.0):
        from qemu.qmp import QMPClient

        self._loop = asyncio.new_event_loop()
        self._client = QMPClient("vmkit")
        self._timeout = timeout
        try:
            self._run(self._client.connect(str(path)))
        except BaseException:
            self._loop.close()
            raise

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        try:
            return self._loop.run_until_complete(
                asyncio.wait_for(coro, timeout if timeout is not None else self._timeout)
            )
        except TimeoutError:
            raise QMPError("QEMU's QMP socket did not answer in time") from None
        except Exception as exc:
            if isinstance(exc, QMPError):
                raise
            raise QMPError(f"QMP: {exc}") from exc

    def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        return self._run(self._client.execute(cmd, args))

    def close(self) -> None:
        try:
            self._run(self._client.disconnect(), 2.0)
        except QMPError:
            pass
        finally:
            self._loop.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
