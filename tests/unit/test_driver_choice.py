"""`driver: auto` and `arch:` together: only QEMU emulates another architecture."""

from __future__ import annotations

import pytest

from vmkit import drivers
from vmkit.errors import InvalidInput
from vmkit.hostinfo import machine_arch

OTHER = "aarch64" if machine_arch() == "x86_64" else "x86_64"


def test_auto_picks_qemu_for_another_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from vmkit import hostinfo

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(hostinfo, "is_macos", lambda: True)  # vfkit would win otherwise
    assert drivers.resolve_driver_name("auto") == "vfkit"
    assert drivers.resolve_driver_name("auto", OTHER) == "qemu"
    assert drivers.resolve_driver_name("auto", machine_arch()) == "vfkit"
    assert drivers.get_driver("qemu", OTHER).binary_names == (f"qemu-system-{OTHER}",)
    with pytest.raises(InvalidInput, match=f"use driver: qemu to emulate {OTHER}"):
        drivers.get_driver("vfkit", OTHER)
