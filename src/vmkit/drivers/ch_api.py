"""Cloud Hypervisor's REST API over its Unix socket (`--api-socket`), with httpx.

Every call is one short request; errors carry CH's own text (it answers failures with a
plain-text or JSON body naming the cause).
"""

from __future__ import annotations

from typing import Any

from vmkit.errors import VmkitError

BASE = "http://localhost/api/v1"


class CHError(VmkitError):
    def __init__(self, endpoint: str, status: int | None, text: str):
        self.endpoint = endpoint
        self.status = status
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"Cloud Hypervisor {endpoint}: {where}: {text.strip() or '(no text)'}")


class CHClient:
    def __init__(self, socket_path: str, timeout: float = 10.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        transport = httpx.HTTPTransport(uds=self.socket_path)
        try:
            with httpx.Client(transport=transport, timeout=self.timeout) as client:
                resp = client.request(method, f"{BASE}/{endpoint}", json=body)
        except (httpx.HTTPError, OSError) as exc:
            raise CHError(endpoint, None, str(exc)) from None
        if resp.status_code >= 300:
            raise CHError(endpoint, resp.status_code, resp.text)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def get(self, endpoint: str) -> Any:
        return self.request("GET", endpoint)

    def put(self, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("PUT", endpoint, body)
