"""Unit-test fixtures: a private vmkit home/runtime dir and small boot files in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def vmkit_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """VMKIT_HOME and VMKIT_RUNTIME_DIR under tmp_path (neither created yet)."""
    home = tmp_path / "home"
    run = tmp_path / "run"
    monkeypatch.setenv("VMKIT_HOME", str(home))
    monkeypatch.setenv("VMKIT_RUNTIME_DIR", str(run))
    return home, run


@pytest.fixture
def boot_files(tmp_path: Path) -> dict[str, Path]:
    """A fake kernel (an ELF header: create checks it starts like a kernel), initrd and raw
    disk."""
    files = {
        "kernel": tmp_path / "vmlinux",
        "initrd": tmp_path / "initrd.img",
        "disk": tmp_path / "disk.raw",
    }
    for path in files.values():
        path.write_bytes(b"\0" * 512)
    files["kernel"].write_bytes(b"\x7fELF" + b"\0" * 508)
    return files


@pytest.fixture
def spec_dict(boot_files: dict[str, Path]) -> dict[str, Any]:
    """A minimal valid spec dict whose files exist."""
    return {"name": "vm1", "boot": {"kernel": str(boot_files["kernel"])}}
