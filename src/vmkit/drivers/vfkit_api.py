"""vfkit's REST API over its Unix socket (`--restful-uri unix:///PATH`), with httpx.

GET /vm/state, POST /vm/state {"state": Stop|HardStop|Pause|Resume} (202 Accepted),
GET /vm/inspect. krunkit answers any GET with Running and any POST by stopping the VM
(HTTP 200, a NUL after the JSON, no Content-Length), so the client accepts both.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from vmkit.errors import VmkitError

if TYPE_CHECKING:
    import httpx

# VZVirtualMachineState names -> vmkit states.
VM_STATES = {
    "VirtualMachineStateRunning": "running",
    "VirtualMachineStateStopped": "stopped",
    "VirtualMachineStatePaused": "paused",
    "VirtualMachineStateError": "failed",
    "VirtualMachineStateStarting": "starting",
    "VirtualMachineStatePausing": "paused",
    "VirtualMachineStateResuming": "running",
    "VirtualMachineStateStopping": "stopping",
    "VirtualMachineStateSaving": "paused",
    "VirtualMachineStateRestoring": "starting",
}
STATE_REQUESTS = ("Stop", "HardStop", "Pause", "Resume")


class VfkitAPIError(VmkitError):
    """vfkit answered, but not with what the request needed."""


class VfkitUnreachable(VfkitAPIError):
    """Nothing answers on the socket: the VMM is gone (or not up yet)."""


class VfkitDropped(VfkitAPIError):
    """The VMM took the connection, then closed it mid-exchange. krunkit does this: it reads
    once, answers and closes, so a request whose body came in a second write still reached
    it as a POST (and krunkit acts on any POST)."""


class VfkitAPI:
    """One short-lived client per call: vmkit is not a daemon and holds no connection."""

    def __init__(self, socket_path: str, timeout: float = 2.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        import httpx  # 55 ms: only when a VMM is asked something, never on a plain `vmkit ls`

        transport = httpx.HTTPTransport(uds=self.socket_path)
        try:
            with httpx.Client(
                transport=transport, base_url="http://vfkit", timeout=self.timeout
            ) as client:
                return client.request(method, path, json=body)
        except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError) as exc:
            raise VfkitDropped(
                f"vfkit's REST socket {self.socket_path} closed the connection ({exc})"
            ) from None
        except (httpx.ConnectError, FileNotFoundError) as exc:
            raise VfkitUnreachable(
                f"vfkit's REST socket {self.socket_path} does not answer ({exc}); "
                "the VMM has exited or is not up yet"
            ) from None
        except httpx.TimeoutException:
            raise VfkitAPIError(
                f"vfkit's REST socket {self.socket_path} did not answer within {self.timeout:g}s"
            ) from None

    def state(self) -> dict[str, Any]:
        """The raw /vm/state answer: {"state": "VirtualMachineState...", "canPause": ...}."""
        resp = self._request("GET", "/vm/state")
        data = self._json(resp, "GET /vm/state")
        if not isinstance(data.get("state"), str):
            raise VfkitAPIError(f"GET /vm/state answered without a state: {data!r}")
        return data

    def vmkit_state(self) -> str:
        raw = self.state()["state"]
        return VM_STATES.get(raw, "running")

    def set_state(self, state: str) -> None:
        """POST /vm/state; vfkit answers 202 when it accepted the request, krunkit 200."""
        if state not in STATE_REQUESTS:
            raise ValueError(f"unknown vfkit state request {state!r}")
        resp = self._request("POST", "/vm/state", {"state": state})
        if resp.status_code not in (200, 202):  # krunkit answers 200
            raise VfkitAPIError(
                f"vfkit refused {state} (HTTP {resp.status_code}: {resp.text.strip() or '-'})"
            )

    def inspect(self) -> dict[str, Any]:
        return self._json(self._request("GET", "/vm/inspect"), "GET /vm/inspect")

    @staticmethod
    def _json(resp: httpx.Response, what: str) -> dict[str, Any]:
        if resp.status_code != 200:
            raise VfkitAPIError(f"{what}: HTTP {resp.status_code}: {resp.text.strip() or '-'}")
        try:
            # krunkit ends its canned answers with a NUL byte (and sends no Content-Length).
            data = json.loads(resp.content.rstrip(b"\0 \r\n"))
        except ValueError:
            raise VfkitAPIError(f"{what} answered with non-JSON: {resp.text[:200]!r}") from None
        if not isinstance(data, dict):
            raise VfkitAPIError(f"{what} answered with {type(data).__name__}, not an object")
        return data
