"""Incremental follower of the serial log for the `<marker> <ip>` readiness line.

Keeps a byte offset and the unfinished last line, so a marker split across reads is found
and the file is never re-read; a truncated (restarted) log starts over from 0. A line only
counts once complete (newline seen), so `10.0.2.1` is never read from a half-written
`10.0.2.15`. The address must parse as IPv4/IPv6, or be `-` (no network).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from vmkit.plain import Frozen, Plain

MAX_LINE = 4096


class Ready(Frozen):
    _fields = ("ip", "offset")
    __slots__ = _fields

    def __init__(self, ip: str | None, offset: int):
        self.ip = ip  # None when the guest said "-"
        self.offset = offset  # byte offset just after the readiness line


class ReadinessFollower(Plain):
    _fields = ("path", "marker", "offset", "_partial", "rejected")
    __slots__ = _fields

    def __init__(
        self,
        path: Path,
        marker: str,
        offset: int = 0,
        _partial: bytes = b"",
        rejected: list[str] | None = None,
    ):
        self.path, self.marker, self.offset, self._partial = path, marker, offset, _partial
        self.rejected = [] if rejected is None else rejected  # marker lines with a bad address

    def poll(self) -> Ready | None:
        """Read what is new; the first valid readiness line, if any."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size < self.offset:  # truncated: the log was restarted
                self.offset, self._partial = 0, b""
            if size == self.offset:
                return None
            os.lseek(fd, self.offset, os.SEEK_SET)
            chunk = os.read(fd, size - self.offset)
        finally:
            os.close(fd)
        start_of_buf = self.offset - len(self._partial)
        self.offset += len(chunk)
        buf = self._partial + chunk
        lines = buf.split(b"\n")
        self._partial = lines.pop()[-MAX_LINE:]
        pos = start_of_buf
        for line in lines:
            pos += len(line) + 1
            ready = self._parse(line)
            if ready is not None:
                return Ready(ready if ready != "-" else None, pos)
        return None

    def _parse(self, raw: bytes) -> str | None:
        """The address after any whole-word marker in the line; kernel messages may sit
        before the marker or right after the address (`VMKIT_READY -[ 1.84] tsc: ...`)."""
        text = raw.decode("utf-8", errors="replace").replace("\r", "")
        bad = False
        for m in re.finditer(re.escape(self.marker) + r"(?=\s|$)", text):
            addr = _ADDR_RE.match(text, m.end())
            if addr is None:
                bad = True
                continue
            found = guest_address(addr.group(1))
            if found is not None:
                return found
            bad = True
        if bad:
            self.rejected.append(text.strip())
        return None


def guest_address(word: str) -> str | None:
    """A guest's word for its address: `-` (none) or an IPv4/IPv6 address, in its normal
    form; None for anything else (the guest is not trusted to say only that)."""
    if word == "-":
        return word
    try:
        return str(ipaddress.ip_address(word))
    except ValueError:
        return None


_ADDR_RE = re.compile(r"[ \t]+(-(?![0-9A-Za-z:.])|[0-9A-Fa-f:.]+(?![0-9A-Za-z_:.-]))")


def tail_lines(path: Path, n: int = 20, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `n` lines of a log, reading at most `max_bytes` from its end."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace").replace("\r", "")
    lines = [ln for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines[-n:]
