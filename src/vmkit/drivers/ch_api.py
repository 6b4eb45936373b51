"""Cloud Hypervisor's REST API over its Unix socket (`--api-socket`), with httpx.

Every call is one short request; errors carry CH's own text. Real CH answers a failure
with HTTP 500 and a JSON array of strings, the chain of causes (plus a backtrace when
RUST_BACKTRACE is set); `error_text` keeps the chain and drops the backtrace.
`put_with_fds` is the one call httpx cannot make: CH takes file descriptors (TAP fds for
`vm.add-net`) as SCM_RIGHTS ancillary data on the request itself, so that request is
written by hand on a raw socket.
"""

from __future__ import annotations

import array
import json
import socket
from typing import Any

from vmkit.errors import VmkitError

BASE = "http://localhost/api/v1"
_MAX_HEAD = 64 * 1024


class CHError(VmkitError):
    def __init__(self, endpoint: str, status: int | None, text: str):
        self.endpoint = endpoint
        self.status = status
        self.text = error_text(text)
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"Cloud Hypervisor {endpoint}: {where}: {self.text or '(no text)'}")


def error_text(body: str) -> str:
    """CH's error body as one line: the JSON array's causes joined, without the generic
    "Error from API" head and without backtrace lines; any other body as it came."""
    body = body.strip()
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
        return body
    causes: list[str] = []
    for part in parsed:
        first = (part.strip().splitlines() or [""])[0].strip()
        if not first or first == "Error from API":
            continue
        if first.lower().startswith("stack backtrace") or first.startswith(("0: ", "at ")):
            break  # RUST_BACKTRACE: the rest is the trace
        if first not in causes:
            causes.append(first)
    return ": ".join(causes) or body


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

    def put_with_fds(self, endpoint: str, body: dict[str, Any], fds: list[int]) -> Any:
        """PUT `body` with `fds` attached (SCM_RIGHTS); CH keeps its own copies of them."""
        payload = json.dumps(body).encode()
        head = (
            f"PUT /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        data = head + payload
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(self.timeout)
            try:
                s.connect(self.socket_path)
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                sent = s.sendmsg([data], ancillary)
                if sent < len(data):
                    s.sendall(data[sent:])
                status, text = _read_response(s)
            except OSError as exc:
                raise CHError(endpoint, None, str(exc) or type(exc).__name__) from None
        if status >= 300:
            raise CHError(endpoint, status, text)
        return json.loads(text) if text.strip() else None


def _read_response(s: socket.socket) -> tuple[int, str]:
    """(status, body) of one HTTP/1.1 response, read by its Content-Length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionResetError("the connection closed before a full answer")
        buf += chunk
        if len(buf) > _MAX_HEAD:
            raise ConnectionError("the answer's header is too long")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {lines[0][:80]!r}")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    while len(rest) < length:
        chunk = s.recv(length - len(rest))
        if not chunk:
            break
        rest += chunk
    return int(parts[1]), rest[:length].decode(errors="replace")
