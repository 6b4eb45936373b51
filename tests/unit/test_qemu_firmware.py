"""UEFI firmware selection from QEMU's firmware descriptors (docs/interop/firmware.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vmkit.drivers import qemu_firmware as fw
from vmkit.errors import NotFound


def descriptor(code: Path, template: Path | None, **over: Any) -> dict[str, Any]:
    mapping: dict[str, Any] = {
        "device": "flash",
        "executable": {"filename": str(code), "format": "raw"},
    }
    if template is not None:
        mapping["nvram-template"] = {"filename": str(template), "format": "raw"}
    data: dict[str, Any] = {
        "interface-types": ["uefi"],
        "mapping": mapping,
        "targets": [{"architecture": "x86_64", "machines": ["pc-i440fx-*", "pc-q35-*"]}],
        "features": ["acpi-s3"],
    }
    data.update(over)
    return data


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("CODE.fd", "VARS.fd", "SB_CODE.fd", "SMM_CODE.fd"):
        out[name] = tmp_path / name
        out[name].write_bytes(b"\0" * 4096)
    return out


def write(d: Path, name: str, data: dict[str, Any] | None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text("" if data is None else json.dumps(data))


def test_the_first_plain_uefi_descriptor_by_name_wins(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    share = tmp_path / "share"
    sb = descriptor(images["SB_CODE.fd"], images["VARS.fd"], features=["secure-boot"])
    smm = descriptor(images["SMM_CODE.fd"], images["VARS.fd"], features=["requires-smm"])
    write(share, "10-secure.json", sb)
    write(share, "20-smm.json", smm)
    arm = [{"architecture": "aarch64", "machines": ["virt-*"]}]
    write(share, "30-arm.json", descriptor(images["CODE.fd"], images["VARS.fd"], targets=arm))
    write(
        share, "40-bios.json", {**descriptor(images["CODE.fd"], None), "interface-types": ["bios"]}
    )
    write(share, "60-plain.json", descriptor(images["CODE.fd"], images["VARS.fd"]))
    got = fw.find_uefi("x86_64", [share])
    assert (got.code, got.vars_template) == (images["CODE.fd"], images["VARS.fd"])
    assert got.source.endswith("60-plain.json")
    assert fw.find_uefi("aarch64", [share]).source.endswith("30-arm.json")


def test_a_later_dir_overrides_and_an_empty_file_masks(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    share, etc = tmp_path / "share", tmp_path / "etc"
    write(share, "50-a.json", descriptor(images["CODE.fd"], images["VARS.fd"]))
    write(share, "60-b.json", descriptor(images["SB_CODE.fd"], images["VARS.fd"]))
    write(etc, "50-a.json", None)  # masked by the admin
    assert fw.find_uefi("x86_64", [share, etc]).code == images["SB_CODE.fd"]


def test_a_descriptor_whose_files_are_missing_is_skipped(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    share = tmp_path / "share"
    write(share, "10-gone.json", descriptor(tmp_path / "nope.fd", images["VARS.fd"]))
    write(share, "20-ok.json", descriptor(images["CODE.fd"], images["VARS.fd"]))
    assert fw.find_uefi("x86_64", [share]).code == images["CODE.fd"]


def test_no_firmware_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fw, "FALLBACK", {"x86_64": [], "aarch64": []})
    with pytest.raises(NotFound, match=r"apt install ovmf.*boot\.firmware"):
        fw.find_uefi("x86_64", [tmp_path / "none"])


def test_a_spec_firmware_pairs_with_its_vars_template_or_stands_alone(
    images: dict[str, Path],
) -> None:
    paired = fw.from_spec(images["CODE.fd"])
    assert paired.vars_template == images["VARS.fd"]
    alone = fw.from_spec(images["SB_CODE.fd"])  # SB_VARS.fd does not exist: -bios
    assert alone.vars_template is None


@pytest.mark.skipif(
    not Path("/usr/share/qemu/firmware").is_dir(), reason="no QEMU descriptors here"
)
def test_this_machines_descriptors_give_ovmf_without_secure_boot() -> None:
    got = fw.find_uefi("x86_64")
    assert "secboot" not in got.code.name and got.vars_template is not None
