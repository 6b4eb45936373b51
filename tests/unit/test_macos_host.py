"""`vmkit doctor`'s macOS facts, with the macOS version, CPU and installed binaries injected
(the binaries are the vfkit TEST DOUBLE answering --version): this runs on Linux."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vmkit.drivers import vmm_version
from vmkit.macos_host import doctor_facts

DOUBLE = Path(__file__).resolve().parent.parent / "contract" / "vfkit_double.py"


@pytest.fixture
def fake_bins(tmp_path: Path, vmkit_dirs: tuple[Path, Path]) -> dict[str, str]:
    out = {}
    for name, version in (("vfkit", "0.6.1"), ("krunkit", "0.2.1")):
        shim = tmp_path / name
        shim.write_text(
            f"#!/bin/sh\nVFKIT_DOUBLE_FLAVOR={name} VFKIT_DOUBLE_VERSION={version} "
            f'exec {sys.executable} {DOUBLE} "$@"\n'
        )
        shim.chmod(0o755)
        out[name] = str(shim)
    vmm_version._binary_version.cache_clear()
    return out


def test_apple_silicon_sonoma_with_both_installed(fake_bins: dict[str, str]) -> None:
    facts = doctor_facts("14.5", "arm64", fake_bins.get)
    assert facts["cpu"] == "Apple Silicon" and facts["macos"] == "14.5"
    assert facts["vfkit"]["version"] == "0.6.1"
    assert facts["krunkit"]["version"] == "0.2.1"
    assert "EFI boot from a disk image" in facts["vfkit"]["enables"]
    assert any("Rosetta" in e for e in facts["vfkit"]["enables"])
    assert not any("nested" in e for e in facts["vfkit"]["enables"])
    assert any("GPU" in e for e in facts["krunkit"]["enables"])
    assert facts["driver_auto"] == "vfkit" and facts["fixes"] == []


def test_intel_monterey_without_vfkit_says_what_to_install() -> None:
    facts = doctor_facts("12.7", "x86_64", lambda name: None)
    assert facts["cpu"] == "Intel"
    assert facts["vfkit"]["path"] is None
    assert "EFI boot from a disk image" not in facts["vfkit"]["enables"]
    assert facts["krunkit"]["enables"] == [
        "nothing here: krunkit needs Apple Silicon and macOS 14+"
    ]
    assert facts["driver_auto"] == "qemu (hvf)"
    assert facts["fixes"] == ["install vfkit for the vfkit driver: `brew install vfkit`"]


def test_sequoia_on_apple_silicon_enables_nested(fake_bins: dict[str, str]) -> None:
    facts = doctor_facts("15.1", "arm64", fake_bins.get)
    assert any("nested" in e for e in facts["vfkit"]["enables"])
