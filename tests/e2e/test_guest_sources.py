"""The tiny guest built without apt (straight from the Debian archive, as on a Mac) is the
same, byte for byte, as the one apt builds: same packages, same kernel, same initramfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmkit.guest.build import build, find_built


def test_the_archive_source_builds_the_same_arm64_guest_as_apt(tmp_path: Path) -> None:
    by_apt = find_built(arch="arm64") or build(arch="arm64", source_name="apt")
    by_archive = build(base=tmp_path / "cache", arch="arm64", source_name="archive")
    if by_archive.manifest["packages"] != by_apt.manifest["packages"]:
        pytest.skip(
            f"the archive has {by_archive.manifest['packages']} and apt's list "
            f"{by_apt.manifest['packages']}: the archive moved on since apt's list was read"
        )
    assert by_archive.manifest["sha256"] == by_apt.manifest["sha256"]
    assert by_archive.manifest["modules"] == by_apt.manifest["modules"]
    assert by_archive.kernel.name == "Image"
