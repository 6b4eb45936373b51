"""vmkit's vfkit argv through vfkit's OWN parser (vfkit_oracle: pkg/config + pkg/cmdline
compiled), and the defects an earlier run of that oracle found (issue 16 §1): quotes in
--bootloader paths, the REST socket URI, the EFI variable store's `create`."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_vfkit_argv import ctx_for, matrix, spec
from vfkit_oracle import assert_parses_as_rendered, bootloader, restful_path, vfkit_parse

from vmkit.drivers import vfkit_argv as vf
from vmkit.drivers.vfkit import KrunkitDriver, VfkitDriver
from vmkit.errors import InvalidInput

NEW = (0, 6, 2)


@pytest.mark.capability("vfkit", "boot_linux", "boot_efi", "disk_raw", "net_none", "net_user")
@pytest.mark.capability("vfkit", "rng", "balloon")
def test_every_spec_in_the_matrix_parses_with_vfkits_own_code(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    argvs, specs = {}, {}
    for label, over in matrix(files):
        s = spec(files, **over)
        specs[label] = s
        argvs[label] = VfkitDriver(arch="x86_64", version=NEW).plan(s, ctx_for(tmp_path)).argv
    results = vfkit_parse(argvs)
    for label, argv in argvs.items():
        result = results[label]
        assert_parses_as_rendered(result, argv)
        assert restful_path(result) == "/tmp/vk/abc.rest"
        boot = bootloader(result)
        s = specs[label]
        if s.boot.kind == "linux":
            assert boot["vmlinuzPath"] == str(s.boot.kernel), label
            assert boot.get("initrdPath", "") == str(s.boot.initrd or ""), label
            assert boot["kernelCmdLine"] == f"{s.boot.cmdline} console=hvc0".strip(), label
        else:
            assert boot["efiVariableStorePath"] == str(tmp_path / "vm" / "efi-variable-store")


@pytest.mark.capability("vfkit", "net_switch", "shares", "rosetta")
def test_the_switch_nic_and_rosetta_parse_with_vfkits_own_code(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    ctx = ctx_for(tmp_path)
    ctx.switch_sockets = {"lan": Path("/tmp/vk/sw-0123456789/sock")}
    share = tmp_path / "src"
    share.mkdir()
    s = spec(
        files,
        networks=[{"mode": "switch", "switch": "lan"}],
        shares=[{"host": str(share), "tag": "src"}],
        rosetta=True,
    )
    argv = VfkitDriver(arch="aarch64", version=NEW).plan(s, ctx).argv
    assert_parses_as_rendered(vfkit_parse({"a": argv})["a"], argv)


# ---- 1. a `"` in a --bootloader path -------------------------------------------------------


@pytest.mark.parametrize("key", ["kernel", "initrd"])
def test_a_double_quote_in_a_boot_path_is_refused_by_field(
    tmp_path: Path, files: dict[str, Path], key: str
) -> None:
    bad = tmp_path / 'a"b'
    bad.write_bytes(b"\0" * 512)
    boot = {"kernel": str(files["kernel"]), key: str(bad)}
    with pytest.raises(InvalidInput, match=rf"boot\.{key}: .*contains a double quote"):
        VfkitDriver(arch="x86_64").check(spec(files, boot=boot))


def test_a_double_quote_in_the_vm_folder_or_macos_files_is_refused(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    ctx = ctx_for(tmp_path)
    ctx.vm_dir = tmp_path / 'home"x' / "vm1"
    efi = spec(files, boot={"kind": "efi"}, disks=[{"path": str(files["disk"])}])
    with pytest.raises(InvalidInput, match=r"the VM's folder \(under VMKIT_HOME\): .*double quote"):
        VfkitDriver(arch="x86_64").plan(efi, ctx)
    boot = {
        "kind": "macos",
        "machine_identifier": str(tmp_path / 'id"x'),
        "hardware_model": str(tmp_path / "hw"),
        "aux_image": str(tmp_path / "aux"),
    }
    macos = spec(files, boot=boot, disks=[{"path": str(files["disk"])}])
    with pytest.raises(InvalidInput, match=r"boot\.machine_identifier: .*double quote"):
        VfkitDriver(arch="aarch64").check(macos)


def test_any_boot_path_is_read_back_by_vfkit_or_refused(tmp_path: Path) -> None:
    """A seeded corpus of awkward paths: each either reaches vfkit's parser as the same
    kernel and initrd, or is refused before launch."""
    rng = random.Random(16)
    alphabet = " \"'=,%?#\\;:é$()[]{}!\tab/"
    argvs, want = {}, {}
    for i in range(300):
        kernel = "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        initrd = "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        try:
            text = vf.linux_bootloader(Path(kernel), Path(initrd), "console=hvc0 a=b,c")
        except InvalidInput:
            assert '"' in kernel + initrd or "," in kernel + initrd
            continue
        argvs[str(i)] = ["vfkit", "--bootloader", text]
        want[str(i)] = (str(Path(kernel)), str(Path(initrd)))
    assert len(argvs) > 50
    for name, result in vfkit_parse(argvs).items():
        assert result["ok"], result["errors"]
        boot = bootloader(result)
        assert (boot["vmlinuzPath"], boot["initrdPath"]) == want[name]
        assert boot["kernelCmdLine"] == "console=hvc0 a=b,c"


# ---- 5. the REST socket URI ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a%41b.rest", "q?x.rest", "bad%zz.rest", "h#f.rest", "sp ace.rest", "é,;=.rest"]
)
def test_the_rest_socket_path_reaches_vfkit_unchanged(name: str) -> None:
    sock = Path("/tmp/vk") / name
    argv = ["vfkit", "--bootloader", "efi,variable-store=/v", "--restful-uri", vf.restful_uri(sock)]
    result = vfkit_parse({"a": argv})["a"]
    assert result["ok"], result["errors"]
    assert restful_path(result) == str(sock)


def test_the_escaped_rest_uri_still_respects_the_socket_length_limit() -> None:
    sock = Path("/tmp/" + "%" * 90)  # 95 bytes as a path; escaped it is longer, vfkit decodes
    argv = ["vfkit", "--bootloader", "efi,variable-store=/v", "--restful-uri", vf.restful_uri(sock)]
    assert restful_path(vfkit_parse({"a": argv})["a"]) == str(sock)


# ---- 6. the EFI variable store is created once, then kept ----------------------------------


def test_the_efi_store_is_created_only_when_it_does_not_exist(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    s = spec(files, boot={"kind": "efi"}, disks=[{"path": str(files["disk"])}])
    first = VfkitDriver(arch="aarch64", version=NEW).plan(s, ctx_for(tmp_path)).argv
    store = tmp_path / "vm" / "efi-variable-store"
    store.write_bytes(b"boot entries a guest wrote")
    later = VfkitDriver(arch="aarch64", version=NEW).plan(s, ctx_for(tmp_path)).argv
    results = vfkit_parse({"first": first, "later": later})
    assert bootloader(results["first"]) == {
        "efiVariableStorePath": str(store),
        "createVariableStore": True,
    }
    assert bootloader(results["later"]) == {
        "efiVariableStorePath": str(store),
        "createVariableStore": False,
    }


def test_krunkit_always_passes_create_which_its_parser_requires(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """krunkit's --bootloader takes exactly `efi,variable-store=PATH,create` (cmdline.rs
    args_parse(..., Some(3))); libkrun keeps its own firmware, so nothing is overwritten."""
    s = spec(files, boot={"kind": "efi"}, disks=[{"path": str(files["disk"])}])
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "efi-variable-store").write_bytes(b"x")
    argv = KrunkitDriver(arch="aarch64").plan(s, ctx_for(tmp_path)).argv
    assert argv[argv.index("--bootloader") + 1].endswith(",create")
