"""spec.py: validation of names, sizes, fields, paths and files; every problem at once."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from vmkit.errors import InvalidInput, SpecError
from vmkit.names import validate_name
from vmkit.spec import (
    EfiBoot,
    LinuxBoot,
    MachineSpec,
    load_spec_file,
    missing_files,
    spec_from_dict,
)
from vmkit.units import SIZE_HELP

NAME_PATTERN = r"[a-z0-9_][a-z0-9_.-]{0,62}"
KERNEL = "/nonexistent/vmlinux"  # with check_files=False the file need not exist


def _spec(**fields: Any) -> MachineSpec:
    data: dict[str, Any] = {"name": "vm", "boot": {"kernel": KERNEL}, **fields}
    return spec_from_dict(data, check_files=False)


def _problems(data: dict[str, Any], **kw: Any) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        spec_from_dict(data, **kw)
    return dict(exc.value.problems)


def _bad(**fields: Any) -> dict[str, str]:
    return _problems({"name": "vm", "boot": {"kernel": KERNEL}, **fields}, check_files=False)


# ---- names ---------------------------------------------------------------------------------


@given(name=st.from_regex(NAME_PATTERN, fullmatch=True))
def test_valid_names_are_accepted(name: str) -> None:
    assert validate_name(name) == name
    assert _spec(name=name).name == name


@given(name=st.text(max_size=80))
def test_names_not_fully_matching_the_pattern_are_rejected(name: str) -> None:
    if re.fullmatch(NAME_PATTERN, name):
        return
    problems = _bad(name=name)
    assert set(problems) == {"name"}
    assert repr(name) in problems["name"]


@pytest.mark.parametrize(
    "name",
    ["", "VM", "myVM", "a/b", "../etc", ".hidden", "-flag", "a" * 64, "vm\n", "a b", "vm:1"],
)
def test_bad_names_rejected_with_field_and_value_in_message(name: str) -> None:
    with pytest.raises(SpecError) as exc:
        _spec(name=name)
    assert exc.value.problems[0][0] == "name"
    assert f"name: {name!r} is not a valid name" in str(exc.value)


def test_name_of_63_chars_is_the_maximum() -> None:
    assert _spec(name="a" * 63).name == "a" * 63


@pytest.mark.parametrize("value", [5, None, ["vm"]])
def test_non_string_names_are_rejected(value: Any) -> None:
    assert "name" in _bad(name=value)


def test_spec_error_is_invalid_input_with_exit_code_2() -> None:
    with pytest.raises(InvalidInput) as exc:
        _spec(name="BAD")
    assert exc.value.exit_code == 2


# ---- memory and cpus -----------------------------------------------------------------------


@given(mib=st.integers(min_value=16, max_value=1 << 20), data=st.data())
def test_memory_accepts_any_mib_multiple_from_16mib(mib: int, data: st.DataObject) -> None:
    form = data.draw(
        st.sampled_from([f"{mib}M", f"{mib}MiB", f"{mib}m", mib << 20, str(mib << 20)])
    )
    assert _spec(memory=form).memory == mib << 20


@pytest.mark.parametrize(
    ("text", "expected"), [("1G", 1 << 30), ("2GiB", 2 << 30), ("16M", 16 << 20)]
)
def test_memory_units(text: str, expected: int) -> None:
    assert _spec(memory=text).memory == expected


@given(mib=st.integers(min_value=0, max_value=15))
def test_memory_below_16mib_is_rejected(mib: int) -> None:
    problems = _bad(memory=f"{mib}M")
    assert "too small" in problems["memory"]
    assert "16MiB" in problems["memory"]


@given(mib=st.integers(min_value=16, max_value=4096), extra=st.integers(1, (1 << 20) - 1))
def test_memory_not_a_mib_multiple_is_rejected(mib: int, extra: int) -> None:
    problems = _bad(memory=(mib << 20) + extra)
    assert "whole number of MiB" in problems["memory"]


def test_memory_in_decimal_units_that_miss_a_mib_boundary_is_rejected() -> None:
    assert "whole number of MiB" in _bad(memory="1GB")["memory"]


@pytest.mark.parametrize("garbage", ["lots", "12X", "-1G", "1.2.3M", True])
def test_memory_garbage_lists_the_accepted_forms(garbage: Any) -> None:
    assert SIZE_HELP in _bad(memory=garbage)["memory"]


@given(cpus=st.integers(min_value=1, max_value=256))
def test_cpus_1_to_256_accepted_as_int_or_digits(cpus: int) -> None:
    assert _spec(cpus=cpus).cpus == cpus
    assert _spec(cpus=str(cpus)).cpus == cpus


@given(cpus=st.one_of(st.integers(max_value=0), st.integers(min_value=257)))
def test_cpus_out_of_range_rejected(cpus: int) -> None:
    problems = _bad(cpus=cpus)
    assert "1-256" in problems["cpus"]


@pytest.mark.parametrize("cpus", [True, 1.5, "two", "", " 2", None])
def test_cpus_that_are_not_whole_numbers_rejected(cpus: Any) -> None:
    assert "cpus" in _bad(cpus=cpus)


# ---- all problems at once, with field paths --------------------------------------------------


def test_every_invalid_field_is_reported_at_once_with_its_path() -> None:
    problems = _problems(
        {
            "name": "Bad",
            "cpus": 0,
            "memory": "1M",
            "boot": {"kernel": KERNEL, "cmdline": "a\nb"},
            "disks": [{"path": "/d", "format": "vmdk"}],
            "networks": ["user", {"mode": "bridge"}],
            "readiness": {"marker": "has space", "timeout": -1},
            "bogus": 1,
        },
        check_files=False,
    )
    assert set(problems) == {
        "name",
        "cpus",
        "memory",
        "boot.cmdline",
        "disks[0].format",
        "networks[1].mode",
        "readiness.marker",
        "readiness.timeout",
        "bogus",
    }
    assert "'vmdk' is not allowed" in problems["disks[0].format"]
    assert "'bridge' is not allowed" in problems["networks[1].mode"]


def test_error_message_lists_each_field_on_its_own_line() -> None:
    with pytest.raises(SpecError) as exc:
        _spec(cpus=0, memory="1M")
    lines = str(exc.value).splitlines()
    assert lines[0] == "invalid machine spec:"
    assert any(line.strip().startswith("cpus:") for line in lines)
    assert any(line.strip().startswith("memory:") for line in lines)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "vm", "boot": {"kernel": KERNEL}, "colour": "red"}, "colour"),
        ({"name": "vm", "boot": {"kernel": KERNEL, "append": "x"}}, "boot.append"),
        (
            {"name": "vm", "boot": {"kernel": KERNEL}, "disks": [{"path": "/d", "ro": 1}]},
            "disks[0].ro",
        ),
        (
            {"name": "vm", "boot": {"kernel": KERNEL}, "readiness": {"regex": "x"}},
            "readiness.regex",
        ),
    ],
)
def test_unknown_fields_are_rejected_by_path(data: dict[str, Any], field: str) -> None:
    assert "unknown field" in _problems(data, check_files=False)[field]


def test_missing_boot_means_the_tiny_guest() -> None:
    """A spec without `boot` boots vmkit's tiny guest (resolved by Host.create), so the
    Python API and `vmkit run` boot the same guest."""
    from vmkit.spec import TinyBoot

    spec = spec_from_dict({"name": "vm"}, check_files=False)
    assert isinstance(spec.boot, TinyBoot)
    assert spec.to_json()["boot"] == {"kind": "tiny", "initrd": None, "cmdline": ""}


def test_missing_kernel_is_required() -> None:
    assert _problems({"name": "vm", "boot": {}}, check_files=False) == {
        "boot.kernel": "is required"
    }


def test_unknown_boot_kind_names_the_kinds() -> None:
    problems = _problems({"name": "vm", "boot": {"kind": "bios"}}, check_files=False)
    assert "'bios' is not a boot kind" in problems["boot"]


@pytest.mark.parametrize("data", [[], "name: vm", None, 3])
def test_a_spec_must_be_a_mapping(data: Any) -> None:
    with pytest.raises(SpecError, match="must be a mapping"):
        spec_from_dict(data)


def test_bad_enum_values_for_driver_and_accelerator() -> None:
    problems = _bad(driver="Xen!", accelerator="whpx")
    assert "'Xen!'" in problems["driver"]
    assert "'whpx' is not allowed" in problems["accelerator"]


def test_a_driver_name_is_checked_against_the_registry() -> None:
    """The spec takes any driver-shaped name (a new driver needs no change to the spec);
    the registry refuses the ones vmkit does not have, naming the field and the choices."""
    from vmkit.drivers import resolve_driver_name
    from vmkit.errors import InvalidInput

    spec = _spec(driver="xen")
    with pytest.raises(InvalidInput, match=r"driver: 'xen' is not a driver vmkit has; use auto, "):
        resolve_driver_name(spec.driver)


def test_hvf_with_cloud_hypervisor_is_rejected() -> None:
    with pytest.raises(SpecError, match="hvf"):
        _spec(accelerator="hvf", driver="cloud-hypervisor")


def test_spec_round_trips_through_json() -> None:
    spec = _spec(cpus=2, memory="512M", networks="user", disks=[{"path": "/d", "readonly": True}])
    again = spec_from_dict(json.loads(json.dumps(spec.to_json())), check_files=False)
    assert again == spec


def test_assignment_is_validated_too() -> None:
    spec = _spec()
    with pytest.raises(SpecError, match="cpus: 0 is out of range"):
        spec.cpus = 0
    assert spec.cpus == 1


# ---- paths: resolution and existence -------------------------------------------------------


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    spec = spec_from_dict(
        {
            "name": "vm",
            "boot": {"kernel": "k/vmlinux", "initrd": "initrd.img"},
            "disks": [{"path": "../disk.raw"}],
            "serial_log": "logs/serial.log",
        },
        base_dir=tmp_path,
        check_files=False,
    )
    assert isinstance(spec.boot, LinuxBoot)
    assert spec.boot.kernel == tmp_path / "k/vmlinux"
    assert spec.boot.initrd == tmp_path / "initrd.img"
    assert spec.disks[0].path == tmp_path / ".." / "disk.raw"
    assert spec.serial_log == tmp_path / "logs/serial.log"


def test_absolute_paths_ignore_base_dir(tmp_path: Path) -> None:
    spec = spec_from_dict(
        {"name": "vm", "boot": {"kernel": "/abs/vmlinux"}}, base_dir=tmp_path, check_files=False
    )
    assert isinstance(spec.boot, LinuxBoot)
    assert spec.boot.kernel == Path("/abs/vmlinux")


def test_relative_paths_default_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = spec_from_dict({"name": "vm", "boot": {"kernel": "vmlinux"}}, check_files=False)
    assert isinstance(spec.boot, LinuxBoot)
    assert spec.boot.kernel == tmp_path / "vmlinux"


def _write_spec_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "specs"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "vmlinux").write_bytes(b"\x7fELFk")
    (folder / "img" / "initrd").write_bytes(b"i")
    (folder / "disk.raw").write_bytes(b"\0" * 16)
    return folder


SPEC_IN_FILE = {
    "name": "filevm",
    "memory": "64M",
    "boot": {"kernel": "img/vmlinux", "initrd": "img/initrd", "cmdline": "quiet"},
    "disks": [{"path": "disk.raw", "readonly": True}],
    "networks": "user",
}


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_load_spec_file_resolves_against_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    folder = _write_spec_dir(tmp_path)
    path = folder / f"vm{suffix}"
    text = json.dumps(SPEC_IN_FILE) if suffix == ".json" else yaml.safe_dump(SPEC_IN_FILE)
    path.write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    spec = load_spec_file(Path("..") / "specs" / f"vm{suffix}")

    assert isinstance(spec.boot, LinuxBoot)
    assert spec.boot.kernel.resolve() == folder / "img" / "vmlinux"
    assert spec.boot.initrd is not None
    assert spec.boot.initrd.resolve() == folder / "img" / "initrd"
    assert spec.disks[0].path.resolve() == folder / "disk.raw"
    assert spec.disks[0].readonly is True
    assert spec.memory == 64 << 20
    assert [n.mode for n in spec.networks] == ["user"]


def test_load_spec_file_overrides_win(tmp_path: Path) -> None:
    folder = _write_spec_dir(tmp_path)
    path = folder / "vm.yaml"
    path.write_text(yaml.safe_dump(SPEC_IN_FILE))
    spec = load_spec_file(path, {"cpus": 3, "name": "other"})
    assert (spec.cpus, spec.name) == (3, "other")


def test_load_spec_file_reports_field_errors_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "vm.json"
    path.write_text(json.dumps({"name": "vm", "boot": {"kernel": "vmlinux"}, "cpus": 999}))
    with pytest.raises(SpecError) as exc:
        load_spec_file(path)
    fields = dict(exc.value.problems)
    assert "cpus" in fields
    assert "boot.kernel" not in fields  # file checks come after field checks


@pytest.mark.parametrize(
    ("name", "text"), [("bad.json", "{not json"), ("bad.yaml", "name: [unclosed")]
)
def test_load_spec_file_rejects_unparsable_files(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError, match="not valid YAML/JSON"):
        load_spec_file(path)


def test_load_spec_file_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec_file(tmp_path / "nope.yaml")


def test_load_spec_file_of_an_empty_file_asks_for_a_name(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(SpecError) as exc:
        load_spec_file(path)
    assert dict(exc.value.problems) == {"name": "is required"}


def test_missing_kernel_initrd_and_disk_reported_by_path(tmp_path: Path) -> None:
    problems = _problems(
        {
            "name": "vm",
            "boot": {"kernel": "nokernel", "initrd": "noinitrd"},
            "disks": [{"path": "nodisk"}],
        },
        base_dir=tmp_path,
    )
    assert problems == {
        "boot.kernel": f"{str(tmp_path / 'nokernel')!r} does not exist",
        "boot.initrd": f"{str(tmp_path / 'noinitrd')!r} does not exist",
        "disks[0].path": f"{str(tmp_path / 'nodisk')!r} does not exist",
    }


def test_a_directory_is_not_a_kernel(tmp_path: Path) -> None:
    problems = _problems({"name": "vm", "boot": {"kernel": str(tmp_path)}})
    assert "is a directory" in problems["boot.kernel"]


def test_existing_files_pass_the_file_check(
    spec_dict: dict[str, Any], boot_files: dict[str, Path]
) -> None:
    spec_dict["boot"]["initrd"] = str(boot_files["initrd"])
    spec_dict["disks"] = [{"path": str(boot_files["disk"])}]
    spec = spec_from_dict(spec_dict)
    assert missing_files(spec) == []


def test_missing_files_stop_create_before_anything_is_written(
    vmkit_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    from vmkit.machine import Host

    home, _run = vmkit_dirs
    spec = spec_from_dict(
        {"name": "vm", "boot": {"kernel": "gone"}}, base_dir=tmp_path, check_files=False
    )
    with pytest.raises(SpecError) as exc:
        Host(home).create(spec)
    assert [field for field, _ in exc.value.problems] == ["boot.kernel"]
    assert not home.exists()


def test_qcow2_image_declared_raw_is_rejected(tmp_path: Path, spec_dict: dict[str, Any]) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"QFI\xfb" + b"\0" * 100)
    spec_dict["disks"] = [{"path": str(image), "format": "raw"}]
    problems = _problems(spec_dict)
    assert "is a qcow2 image; set format: qcow2" in problems["disks[0].format"]


def test_qcow2_image_declared_qcow2_is_accepted(tmp_path: Path, spec_dict: dict[str, Any]) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"QFI\xfb" + b"\0" * 100)
    spec_dict["disks"] = [{"path": str(image), "format": "qcow2"}]
    assert spec_from_dict(spec_dict).disks[0].format == "qcow2"


def test_only_the_bad_disk_is_named(
    tmp_path: Path, spec_dict: dict[str, Any], boot_files: dict[str, Path]
) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"QFI\xfb")
    spec_dict["disks"] = [{"path": str(boot_files["disk"])}, {"path": str(image)}]
    assert set(_problems(spec_dict)) == {"disks[1].format"}


def test_serial_log_folder_must_exist(tmp_path: Path, spec_dict: dict[str, Any]) -> None:
    spec_dict["serial_log"] = str(tmp_path / "nofolder" / "serial.log")
    problems = _problems(spec_dict)
    assert problems == {"serial_log": f"folder {str(tmp_path / 'nofolder')!r} does not exist"}


@pytest.mark.parametrize("where", ["existing", "shared folder", "symlink"])
def test_serial_log_never_overwrites_a_file(
    tmp_path: Path, spec_dict: dict[str, Any], where: str
) -> None:
    """Issue 15 item 8: `serial_log: /etc/passwd` (or any existing file) was truncated."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    log = victim
    if where == "shared folder":
        shared = tmp_path / "tmp"
        shared.mkdir()
        shared.chmod(0o1777)
        log = shared / "new.log"
    elif where == "symlink":
        log = tmp_path / "link.log"
        log.symlink_to(victim)
    spec_dict["serial_log"] = str(log)
    problems = _problems(spec_dict)
    assert list(problems) == ["serial_log"]
    assert "serial_log unset" in problems["serial_log"]
    assert victim.read_text() == "precious\n"
    # at start the log vmkit's first start made is reused, but not a replaced one
    if where == "existing":
        spec = spec_from_dict({**spec_dict, "serial_log": str(tmp_path / "s.log")})
        (tmp_path / "s.log").write_text("old run\n")
        assert missing_files(spec) == []
        (tmp_path / "s.log").unlink()
        (tmp_path / "s.log").symlink_to(victim)
        assert [f for f, _ in missing_files(spec)] == ["serial_log"]


def test_serial_log_in_existing_folder_is_fine(tmp_path: Path, spec_dict: dict[str, Any]) -> None:
    spec_dict["serial_log"] = str(tmp_path / "serial.log")
    assert spec_from_dict(spec_dict).serial_log == tmp_path / "serial.log"


# ---- networks ------------------------------------------------------------------------------


def test_networks_shorthand_user_string() -> None:
    spec = _spec(networks="user")
    assert [(n.mode, n.mac, n.ip) for n in spec.networks] == [("user", None, None)]


def test_networks_shorthand_list_of_strings() -> None:
    assert [n.mode for n in _spec(networks=["user", "user"]).networks] == ["user", "user"]


@pytest.mark.parametrize("value", ["none", ["none"], [{"mode": "none"}]])
def test_networks_none_means_no_nics(value: Any) -> None:
    assert _spec(networks=value).networks == []


@pytest.mark.parametrize("value", [["none", "user"], ["user", {"mode": "none"}], ["none", "none"]])
def test_networks_none_combined_with_others_is_rejected(value: Any) -> None:
    assert "cannot be combined" in _bad(networks=value)["networks"]


def test_default_is_no_network() -> None:
    assert _spec().networks == []


def test_mac_is_normalised_to_lowercase() -> None:
    assert _spec(networks=[{"mac": "52:54:00:AB:CD:EF"}]).networks[0].mac == "52:54:00:ab:cd:ef"


@pytest.mark.parametrize(
    ("mac", "why"),
    [("01:00:5e:00:00:01", "multicast"), ("52:54:00:12:34", "not a MAC"), ("zz" * 6, "not a MAC")],
)
def test_bad_macs_are_rejected(mac: str, why: str) -> None:
    assert why in _bad(networks=[{"mac": mac}])["networks[0].mac"]


def test_static_ip_needs_a_valid_interface_address() -> None:
    assert _spec(networks=[{"ip": "10.0.2.15/24"}]).networks[0].ip == "10.0.2.15/24"
    assert "not an address" in _bad(networks=[{"ip": "10.0.2.300/24"}])["networks[0].ip"]


# ---- readiness and cmdline -----------------------------------------------------------------


def test_readiness_defaults() -> None:
    readiness = _spec().readiness
    assert (readiness.marker, readiness.timeout) == ("VMKIT_READY", 120.0)


@given(marker=st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True))
def test_markers_of_allowed_characters_are_accepted(marker: str) -> None:
    assert _spec(readiness={"marker": marker}).readiness.marker == marker


@pytest.mark.parametrize("marker", ["", "two words", "a" * 65, "READY\n", "tab\there", "é"])
def test_bad_markers_are_rejected(marker: str) -> None:
    assert "not a usable marker" in _bad(readiness={"marker": marker})["readiness.marker"]


@pytest.mark.parametrize("timeout", [0, -1, 86400.5, float("inf"), float("nan")])
def test_timeouts_out_of_range_are_rejected(timeout: float) -> None:
    assert "out of range" in _bad(readiness={"timeout": timeout})["readiness.timeout"]


@pytest.mark.parametrize("timeout", [0.001, 1, 86400])
def test_timeouts_in_range_are_accepted(timeout: float) -> None:
    assert _spec(readiness={"timeout": timeout}).readiness.timeout == timeout


@pytest.mark.parametrize("cmdline", ["a\nb", "a\rb", "a\0b", "trailing\n"])
def test_cmdline_must_be_one_line(cmdline: str) -> None:
    assert "one line" in _bad(boot={"kernel": KERNEL, "cmdline": cmdline})["boot.cmdline"]


def test_cmdline_is_kept_verbatim() -> None:
    spec = _spec(boot={"kernel": KERNEL, "cmdline": "console=hvc0 quiet  init=/x"})
    assert isinstance(spec.boot, LinuxBoot)
    assert spec.boot.cmdline == "console=hvc0 quiet  init=/x"


# ---- EFI -----------------------------------------------------------------------------------


def test_efi_boot_kind_parses() -> None:
    spec = spec_from_dict({"name": "vm", "boot": {"kind": "efi"}})
    assert isinstance(spec.boot, EfiBoot)
    assert spec.boot.firmware is None


def test_efi_firmware_path_resolves_and_must_exist(tmp_path: Path) -> None:
    problems = _problems(
        {"name": "vm", "boot": {"kind": "efi", "firmware": "OVMF.fd"}}, base_dir=tmp_path
    )
    assert problems == {"boot.firmware": f"{str(tmp_path / 'OVMF.fd')!r} does not exist"}


def test_efi_boot_rejects_linux_fields() -> None:
    problems = _problems({"name": "vm", "boot": {"kind": "efi", "kernel": KERNEL}})
    assert "unknown field" in problems["boot.kernel"]


@pytest.mark.parametrize("kind", ["linux", None])
def test_kind_linux_is_the_default(kind: str | None) -> None:
    boot: dict[str, Any] = {"kernel": KERNEL}
    if kind:
        boot["kind"] = kind
    assert isinstance(_spec(boot=boot).boot, LinuxBoot)
