"""vmkit.input_checks through spec validation: refused at create, not at start (issue 15,
items 15 and 16). Hot-plug goes through the same check (tests/e2e/test_input_safety.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from vmkit.errors import InvalidInput, SpecError
from vmkit.hotplug import disk_from_path
from vmkit.spec import spec_from_dict


def _problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        spec_from_dict(data)
    return dict(exc.value.problems)


def test_one_host_port_published_twice_is_refused(spec_dict: dict[str, Any]) -> None:
    spec_dict["networks"] = [{"mode": "nat", "publish": ["18091:80", "18091:81"]}]
    assert "18091/tcp is already published" in _problems(spec_dict)["networks[0].publish"]
    spec_dict["networks"] = [{"mode": "nat", "publish": ["18091:80", "18091:80/udp"]}]
    assert spec_from_dict(spec_dict)  # tcp and udp are separate ports


def test_more_memory_than_the_host_has_is_refused(spec_dict: dict[str, Any]) -> None:
    spec_dict["memory"] = "1000T"
    assert "more than this host's RAM" in _problems(spec_dict)["memory"]
    spec_dict["memory"] = psutil.virtual_memory().total // 2 >> 20 << 20
    assert spec_from_dict(spec_dict)


def test_a_file_that_is_not_a_kernel_is_refused(spec_dict: dict[str, Any], tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    spec_dict["boot"]["kernel"] = str(notes)
    assert "is not a Linux kernel" in _problems(spec_dict)["boot.kernel"]


def _disk(spec_dict: dict[str, Any], path: Path, **kw: Any) -> dict[str, Any]:
    return {**spec_dict, "disks": [{"path": str(path), **kw}]}


def test_a_symlink_to_a_system_file_is_refused_as_a_read_write_disk(
    spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    link = tmp_path / "disk.img"
    link.symlink_to("/etc/shadow" if Path("/etc/shadow").exists() else "/etc/passwd")
    why = _problems(_disk(spec_dict, link))["disks[0].path"]
    assert "force: true" in why
    assert ("system file" in why) or ("belongs to uid" in why)
    with pytest.raises(InvalidInput, match="force"):
        disk_from_path(link, False, "raw")
    assert spec_from_dict(_disk(spec_dict, link, force=True)).disks[0].force


def test_device_files_and_hard_links_are_refused_unless_forced(
    spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    assert "character device" in _problems(_disk(spec_dict, Path("/dev/null")))["disks[0].path"]
    assert spec_from_dict(_disk(spec_dict, Path("/dev/null"), force=True))
    img = tmp_path / "a.img"
    img.write_bytes(b"\0" * 512)
    os.link(img, tmp_path / "b.img")
    assert "hard links" in _problems(_disk(spec_dict, img))["disks[0].path"]
    assert spec_from_dict(_disk(spec_dict, img, readonly=True))  # read-only: nothing written


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a file to another uid")
def test_another_users_file_is_refused_unless_forced(
    spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    img = tmp_path / "theirs.img"
    img.write_bytes(b"\0" * 512)
    os.chown(img, 65534, 65534)
    assert "belongs to uid 65534" in _problems(_disk(spec_dict, img))["disks[0].path"]
    with pytest.raises(InvalidInput, match="belongs to uid 65534"):
        disk_from_path(img, True, None)
    assert disk_from_path(img, True, None, force=True).force
