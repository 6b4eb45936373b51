"""The installed version of a VMM binary (`vfkit --version`, `krunkit --version`, `tart
--version`), asked once per installed file: flags newer than it are refused or left out."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from typing import Any

Version = tuple[int, ...]
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> Version | None:
    """`vfkit version: v0.6.1`, `krunkit 0.2.1` -> (0, 6, 1)."""
    m = _VERSION_RE.search(text)
    if m is None:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


@functools.cache
def _binary_version(path: str, mtime_ns: int) -> Version | None:
    """`<binary> --version`, run once per binary file (the mtime key notices upgrades)."""
    try:
        proc = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_version(proc.stdout + proc.stderr)


VERSION_CACHE = "vmm-versions.json"


def installed_version(binary: str) -> Version | None:
    """The version of `binary`, asked once per installed file: remembered in this process
    and in the runtime dir (keyed by real path, size and mtime, so an upgrade is noticed),
    so a `vmkit start` does not pay for an extra exec of the VMM."""
    try:
        real = os.path.realpath(binary)
        st = os.stat(real)
    except OSError:
        return None
    key = f"{real}:{st.st_size}:{st.st_mtime_ns}"
    cache = _version_cache()
    if isinstance(cache.get(key), list):
        return tuple(int(x) for x in cache[key])
    version = _binary_version(real, st.st_mtime_ns)
    if version is not None:
        _save_version_cache({**cache, key: list(version)})
    return version


def _version_cache() -> dict[str, Any]:
    from vmkit.paths import runtime_dir

    try:
        data = json.loads((runtime_dir() / VERSION_CACHE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_version_cache(data: dict[str, Any]) -> None:
    from vmkit.paths import runtime_dir

    try:
        path = runtime_dir() / VERSION_CACHE
        tmp = path.with_name(f".{VERSION_CACHE}.{os.getpid()}")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        pass  # only a cache


def format_version(v: Version) -> str:
    return ".".join(str(x) for x in v)
