"""How CLI flags combine with spec files."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmkit.cli_create import build_spec


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    k = tmp_path / "specs" / "vmlinux"
    k.parent.mkdir()
    k.write_bytes(b"\x7fELF kernel")
    return k


def test_timeout_flag_keeps_the_files_marker(kernel: Path) -> None:
    spec_file = kernel.parent / "vm.yaml"
    spec_file.write_text("name: vm\nboot: {kernel: vmlinux}\nreadiness: {marker: UP_NOW}\n")
    spec = build_spec(None, {"spec_file": spec_file, "ready_timeout": 5.0})
    assert spec.readiness.marker == "UP_NOW"
    assert spec.readiness.timeout == 5.0


def test_disk_flag_resolves_against_cwd_not_the_spec_folder(
    kernel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_file = kernel.parent / "vm.yaml"
    spec_file.write_text("name: vm\nboot: {kernel: vmlinux}\n")
    (tmp_path / "data.img").write_bytes(b"\0" * 512)
    monkeypatch.chdir(tmp_path)
    spec = build_spec(None, {"spec_file": spec_file, "disks": (Path("data.img"),)})
    assert spec.disks[0].path == tmp_path / "data.img"
    assert spec.boot.kernel == kernel  # the file's own paths still resolve against its folder
