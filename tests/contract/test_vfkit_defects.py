"""Regression tests for issue 16 §1 that do not need vfkit's parser: version gates checked
against the upstream tags, krunkit's `=` splitting and u8 --cpus, krunkit's ignored
virtio-rng, and the grammar checker refusing what vfkit/krunkit refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_vfkit_argv import ctx_for, spec
from vfkit_grammar import GrammarError, parse_argv, parse_device
from vfkit_oracle import vfkit_parse

from vmkit.drivers.vfkit import KrunkitDriver, VfkitDriver
from vmkit.errors import InvalidInput, NotSupported

# ---- 2. version gates (vfkit and krunkit release tags) -------------------------------------


def test_the_version_table_matches_the_upstream_releases() -> None:
    assert VfkitDriver.min_versions["--pidfile"] == (0, 6, 2)
    assert VfkitDriver.min_versions["virtio-balloon"] == (0, 6, 1)
    assert VfkitDriver.min_versions["virtio-net type=unixgram"] == (0, 6, 2)
    assert KrunkitDriver.min_versions["virtio-net type=unixgram"] == (1, 0, 0)
    assert KrunkitDriver.min_versions["virtio-net vfkitMagic"] == (1, 0, 0)


@pytest.mark.parametrize("version", [(0, 6, 0), (0, 6, 1)])
def test_vfkit_before_0_6_2_gets_no_pidfile_and_still_starts(
    tmp_path: Path, files: dict[str, Path], version: tuple[int, ...]
) -> None:
    argv = VfkitDriver(arch="x86_64", version=version).plan(spec(files), ctx_for(tmp_path)).argv
    assert "--pidfile" not in argv
    parse_argv(argv)
    new = VfkitDriver(arch="x86_64", version=(0, 6, 2)).plan(spec(files), ctx_for(tmp_path)).argv
    assert new[new.index("--pidfile") + 1] == str(tmp_path / "vm" / "vmm.pid")


def test_virtio_balloon_needs_vfkit_0_6_1(tmp_path: Path, files: dict[str, Path]) -> None:
    s = spec(files, balloon=True)
    with pytest.raises(
        NotSupported, match=r"vfkit 0\.6\.0 does not know virtio-balloon; it needs vfkit >= 0\.6\.1"
    ):
        VfkitDriver(arch="x86_64", version=(0, 6, 0)).plan(s, ctx_for(tmp_path))
    VfkitDriver(arch="x86_64", version=(0, 6, 1)).plan(s, ctx_for(tmp_path))


def test_krunkit_joins_a_switch_only_from_1_0_0(tmp_path: Path, files: dict[str, Path]) -> None:
    s = spec(
        files,
        boot={"kind": "efi"},
        disks=[{"path": str(files["disk"])}],
        networks=[{"mode": "switch", "switch": "lan"}],
    )
    ctx = ctx_for(tmp_path)
    ctx.switch_sockets = {"lan": Path("/tmp/vk/sw-0123456789/sock")}
    with pytest.raises(NotSupported, match=r"krunkit 0\.2\.1 does not know .*krunkit >= 1\.0\.0"):
        KrunkitDriver(arch="aarch64", version=(0, 2, 1)).plan(s, ctx)
    KrunkitDriver(arch="aarch64", version=(1, 0, 0)).plan(s, ctx)


# ---- 3. krunkit splits every option on every `=` -------------------------------------------


def krunkit_spec(files: dict[str, Path], **over: Any) -> Any:
    data: dict[str, Any] = {"boot": {"kind": "efi"}, "disks": [{"path": str(files["disk"])}]}
    data.update(over)
    return spec(files, **data)


@pytest.mark.parametrize("field", ["disk", "share", "serial_log"])
def test_krunkit_refuses_an_equals_sign_in_a_value_by_field(
    tmp_path: Path, files: dict[str, Path], field: str
) -> None:
    bad = tmp_path / "a=b"
    bad.mkdir()
    over: dict[str, Any] = {
        "disk": {"disks": [{"path": str(files["disk"])}, {"path": str(bad / "d.raw")}]},
        "share": {"shares": [{"host": str(bad), "tag": "s"}]},
        "serial_log": {"serial_log": str(bad / "serial.log")},
    }[field]
    (bad / "d.raw").write_bytes(b"\0" * 512)
    name = {"disk": r"disks\[1\]\.path", "share": r"shares\[0\]\.host", "serial_log": "serial_log"}
    with pytest.raises(InvalidInput, match=rf"{name[field]}: .*contains '='.*krunkit"):
        KrunkitDriver(arch="aarch64").check(krunkit_spec(files, **over))
    VfkitDriver(arch="aarch64").check(spec(files, **over))  # vfkit splits on the first `=`


def test_krunkit_refuses_a_vm_folder_with_an_equals_sign_before_launch(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    ctx = ctx_for(tmp_path)
    ctx.vm_dir = tmp_path / "home=x" / "vm1"
    with pytest.raises(InvalidInput, match=r"the VM's folder \(under VMKIT_HOME\): .*'='"):
        KrunkitDriver(arch="aarch64").plan(krunkit_spec(files), ctx)


# ---- 4. krunkit's --cpus is a u8 -----------------------------------------------------------


def test_krunkit_refuses_more_than_255_cpus(tmp_path: Path, files: dict[str, Path]) -> None:
    with pytest.raises(InvalidInput, match=r"cpus: 256 .*krunkit takes at most 255"):
        KrunkitDriver(arch="aarch64").check(krunkit_spec(files, cpus=256))
    argv = KrunkitDriver(arch="aarch64").plan(krunkit_spec(files, cpus=255), ctx_for(tmp_path))
    assert argv.argv[argv.argv.index("--cpus") + 1] == "255"


# ---- krunkit ignores virtio-rng ------------------------------------------------------------


def test_krunkit_declares_no_rng_and_passes_none(tmp_path: Path, files: dict[str, Path]) -> None:
    assert not KrunkitDriver.features.rng and not KrunkitDriver().capabilities.rng
    argv = KrunkitDriver(arch="aarch64").plan(krunkit_spec(files), ctx_for(tmp_path)).argv
    assert "virtio-rng" not in argv


# ---- the grammar checker refuses what vfkit / krunkit refuse -------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "virtio-net,nat,offloading=on",
        "virtio-net,type=unixgram,path=/s,offloading=on",
        "virtio-net,type=unixstream,path=/s",
        "virtio-net,path=/s",
    ],
)
def test_the_grammar_refuses_what_vfkit_itself_refuses(bad: str) -> None:
    with pytest.raises(GrammarError):
        parse_device(bad, "vfkit")
    result = vfkit_parse({"a": ["vfkit", "--bootloader", "efi,variable-store=/v", "--device", bad]})
    assert not result["a"]["ok"]


@pytest.mark.parametrize(
    "bad",
    [
        "virtio-blk,path=/a=b.raw",
        "virtio-fs,sharedDir=/x=y,mountTag=t",
        "usb-mass-storage,path=/a.iso,readonly",
        "virtio-balloon",
        "rosetta,mountTag=rosetta",
        "nvme,path=/n.img",
        "virtio-net,nat",
    ],
)
def test_the_grammar_refuses_what_krunkit_refuses(bad: str) -> None:
    with pytest.raises(GrammarError):
        parse_device(bad, "krunkit")


def test_the_grammar_accepts_krunkits_own_forms() -> None:
    for good in (
        "virtio-net,type=unixgram,path=/s,mac=52:54:00:00:00:01,offloading=on,vfkitMagic=on",
        "virtio-net,type=unixstream,path=/s,mac=52:54:00:00:00:01",
        "virtio-blk,path=/d.qcow2,format=qcow2",
    ):
        parse_device(good, "krunkit")
