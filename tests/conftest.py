"""Shared fixtures: an isolated vmkit home per test and a CLI runner."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest


@dataclass
class CLI:
    env: dict[str, str]
    home: Path

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vmkit", *args],  # the console script's entry
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        proc = self(*args, **kw)
        assert proc.returncode == 0, (
            f"vmkit {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)


@pytest.fixture
def vmkit_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """VMKIT_HOME in tmp_path; sockets in a short private dir; both removed afterwards."""
    home = tmp_path / "home"
    run_dir = Path(tempfile.mkdtemp(prefix="vk", dir="/tmp"))
    monkeypatch.setenv("VMKIT_HOME", str(home))
    monkeypatch.setenv("VMKIT_RUNTIME_DIR", str(run_dir))
    env = {**os.environ, "VMKIT_HOME": str(home), "VMKIT_RUNTIME_DIR": str(run_dir)}
    yield env
    _kill_all(home)
    shutil.rmtree(run_dir, ignore_errors=True)


def _kill_all(home: Path) -> None:
    """Never leave a QEMU behind, whatever the test did."""
    from vmkit.machine import Host

    if not home.exists():
        return
    for proc in psutil.process_iter(["cmdline"]):  # a pool's filler would restore more
        cmdline = proc.info["cmdline"] or []
        if "vmkit.machine.pool_filler" in cmdline and str(home) in cmdline:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                proc.wait(10)
    for machine in Host(home).machines():
        with contextlib.suppress(Exception):
            machine.kill()


@pytest.fixture
def cli(vmkit_env: dict[str, str]) -> CLI:
    return CLI(vmkit_env, Path(vmkit_env["VMKIT_HOME"]))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "capability(driver, *names): the driver capabilities this test exercises"
    )
    config.addinivalue_line(
        "markers",
        "vmm_capability(driver, *names): capabilities exercised on the driver's real VMM "
        "without a booted guest (docs/capabilities.md shows the driver's vmm_tested level)",
    )
    config.addinivalue_line(
        "markers",
        "access_path(path, level): the guest-access transport this test exercises, and how "
        "(e2e: a real guest answers; vmm: the real VMM, no guest; contract: a double or the "
        "VMM's parser/binary short of a guest); docs/capabilities.md lists each path's best",
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """With VMKIT_CAPMAP=path, write {driver: {capability: [test ids]}} for the docs generator."""
    out = os.environ.get("VMKIT_CAPMAP")
    if not out:
        return
    capmap: dict[str, dict[str, list[str]]] = {}
    for item in session.items:
        for mark in item.iter_markers("capability"):
            driver, *names = mark.args
            for name in names:
                capmap.setdefault(driver, {}).setdefault(name, []).append(item.nodeid)
        for mark in item.iter_markers("access_path"):
            path, level = mark.args
            capmap.setdefault("@access", {}).setdefault(f"{path} {level}", []).append(item.nodeid)
        for mark in item.iter_markers("vmm_capability"):
            driver, *names = mark.args
            for name in names:
                capmap.setdefault(f"{driver}@vmm", {}).setdefault(name, []).append(item.nodeid)
    Path(out).write_text(json.dumps(capmap, indent=2, sort_keys=True))
