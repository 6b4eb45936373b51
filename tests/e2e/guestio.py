"""Talking to a running tiny guest from tests: its serial log and its console."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path


def serial_log(cli, name: str) -> Path:
    return Path(cli.json("inspect", name)["paths"]["serial_log"])


def guest_run(cli, name: str, command: str, pattern: str, timeout: float = 30) -> re.Match[str]:
    """Type `command` on the guest's console; wait for `pattern` in its serial log.

    The command's output is tagged with a fresh token so earlier output never matches.
    """
    token = uuid.uuid4().hex[:8]
    log = serial_log(cli, name)
    cli.ok("console", name, input=f"echo {token}; {command}; echo {token}-end\n")
    rx = re.compile(re.escape(token) + r"\s*(.*?)" + re.escape(token) + "-end", re.S)
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        m = rx.search(text.split(f"echo {token}-end", 1)[-1])  # past the echoed command
        if m and re.search(pattern, m.group(1)):
            return m
        assert time.monotonic() < deadline, f"no {pattern!r} from {command!r}:\n{text[-2000:]}"
        time.sleep(0.2)
