"""Fixtures shared by the vfkit/krunkit contract tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

QCOW2_HEADER = b"QFI\xfb" + b"\0" * 508


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A kernel, an initrd, raw disks (vfkit opens them and reads the header) and a qcow2."""
    out = {
        "kernel": tmp_path / "vmlinux",
        "initrd": tmp_path / "initrd.img",
        "disk": tmp_path / "disk.raw",
        "disk2": tmp_path / "data.raw",
        "qcow2": tmp_path / "disk.qcow2",
    }
    for key, path in out.items():
        path.write_bytes(QCOW2_HEADER if key == "qcow2" else b"\0" * 512)
    return out


VFKIT_DOUBLE = Path(__file__).resolve().parent / "vfkit_double.py"


@pytest.fixture
def fake_vfkit(
    tmp_path: Path, vmkit_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., None]:
    """Put the double on PATH as `vfkit`; returns a setter for its behaviour switches."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for flavor in ("vfkit", "krunkit"):
        shim = bin_dir / flavor
        shim.write_text(
            f'#!/bin/sh\nVFKIT_DOUBLE_FLAVOR={flavor} exec {sys.executable} {VFKIT_DOUBLE} "$@"\n'
        )
        shim.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    monkeypatch.setenv("PATH", path)
    vmkit_env["PATH"] = path
    from vmkit.drivers import vmm_version

    vmm_version._binary_version.cache_clear()

    def behave(*switches: str) -> None:
        monkeypatch.setenv("VFKIT_DOUBLE", ",".join(switches))
        vmkit_env["VFKIT_DOUBLE"] = ",".join(switches)

    behave()
    return behave


@pytest.fixture
def boot(tmp_path: Path) -> dict[str, Any]:
    kernel, initrd = tmp_path / "vmlinux", tmp_path / "initrd.img"
    kernel.write_bytes(b"\x7fELF" + b"\0" * 508)  # starts like a kernel (create checks)
    initrd.write_bytes(b"\0" * 512)
    return {"kernel": str(kernel), "initrd": str(initrd), "cmdline": "quiet"}
