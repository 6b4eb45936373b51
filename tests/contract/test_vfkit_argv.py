"""The vfkit/krunkit argv builder against vfkit's documented grammar and canonical forms
(../shared/reference/vfkit.md). vfkit cannot run here: this is contract testing only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vfkit_grammar import GrammarError, parse_argv, parse_device

from vmkit.drivers import vfkit_argv as vf
from vmkit.drivers import vmm_version
from vmkit.drivers.base import LaunchContext
from vmkit.drivers.vfkit import KrunkitDriver, VfkitDriver
from vmkit.errors import InvalidInput, NotSupported
from vmkit.spec import spec_from_dict


def ctx_for(tmp_path: Path) -> LaunchContext:
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir(exist_ok=True)
    return LaunchContext(
        vm_dir=vm_dir,
        serial_log=vm_dir / "serial.log",
        events_log=vm_dir / "vmm-events.log",
        sockets={"rest": Path("/tmp/vk/abc.rest")},
        accelerator="hvf",
    )


def spec(files: dict[str, Path], **over: Any) -> Any:
    data: dict[str, Any] = {
        "name": "vm1",
        "boot": {"kernel": str(files["kernel"]), "initrd": str(files["initrd"])},
    }
    data.update(over)
    return spec_from_dict(data, check_files=False)


def plan(driver: VfkitDriver, tmp_path: Path, s: Any) -> list[str]:
    return driver.plan(s, ctx_for(tmp_path)).argv


# ---- canonical forms from vfkit's own output ---------------------------------------------------


@pytest.mark.parametrize(
    ("device", "canonical"),
    [
        (vf.virtio_blk(Path("IMG"), device_id="test"), "virtio-blk,path=IMG,deviceId=test"),
        (vf.virtio_net_nat("00:11:22:33:44:55"), "virtio-net,nat,mac=00:11:22:33:44:55"),
        (vf.virtio_fs(Path("/foo/bar"), "myTag"), "virtio-fs,sharedDir=/foo/bar,mountTag=myTag"),
        (vf.virtio_vsock(1234, Path("/s")), "virtio-vsock,port=1234,socketURL=/s,listen"),
        (vf.virtio_vsock(6, Path("/s"), listen=False), "virtio-vsock,port=6,socketURL=/s,connect"),
        (vf.virtio_serial_log(Path("/l")), "virtio-serial,logFilePath=/l"),
        (vf.virtio_net_unix(Path("/tmp/unix.sock")), "virtio-net,unixSocketPath=/tmp/unix.sock"),
        (
            vf.virtio_net_unixgram(Path("/n.sock"), "52:54:00:00:00:01", offloading=True),
            "virtio-net,type=unixgram,path=/n.sock,mac=52:54:00:00:00:01,offloading=on",
        ),
        (vf.virtio_net_fd(4), "virtio-net,fd=4"),
        (
            vf.usb_mass_storage(Path("/d.iso"), readonly=True),
            "usb-mass-storage,path=/d.iso,readonly",
        ),
        (vf.nvme(Path("/n.img")), "nvme,path=/n.img"),
        (vf.rosetta("rosetta", install=True), "rosetta,mountTag=rosetta,install"),
        (vf.virtio_rng(), "virtio-rng"),
        (vf.virtio_balloon(), "virtio-balloon"),
    ],
)
def test_devices_render_in_vfkits_canonical_form(device: vf.Device, canonical: str) -> None:
    assert device.render() == canonical


@pytest.mark.parametrize(
    "canonical",
    [
        "virtio-blk,path=/IMG,deviceId=test",
        "virtio-net,nat,mac=00:11:22:33:44:55",
        "virtio-fs,sharedDir=/foo/bar,mountTag=myTag",
        "virtio-vsock,port=1234,socketURL=/s,listen",
        "virtio-serial,logFilePath=/l",
        "virtio-net,unixSocketPath=/tmp/unix.sock",
    ],
)
def test_the_grammar_checker_accepts_vfkits_own_canonical_forms(canonical: str) -> None:
    parse_device(canonical)


@pytest.mark.parametrize(
    "bad",
    [
        "virtio-blk,path=/a,b.img",  # a comma inside a path: vfkit sees an unknown option
        "virtio-net,nat,unixSocketPath=/s",
        "virtio-serial",
        "virtio-rng,foo",
        "virtio-vsock,port=0,socketURL=/s",
        "virtio-net,nat=1",
        "floppy,path=/a",
    ],
)
def test_the_grammar_checker_rejects_what_vfkit_rejects(bad: str) -> None:
    with pytest.raises(GrammarError):
        parse_device(bad)


# ---- the matrix: specs -> argv ---------------------------------------------------------------


def matrix(files: dict[str, Path]) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("minimal", {}),
        ("no-initrd", {"boot": {"kernel": str(files["kernel"])}}),
        ("cmdline-with-commas", {"boot": {"kernel": str(files["kernel"]), "cmdline": "a=1,2 b"}}),
        ("big", {"cpus": 4, "memory": "2GiB"}),
        ("disk", {"disks": [{"path": str(files["disk"])}]}),
        (
            "disks-rw-and-ro",
            {
                "disks": [
                    {"path": str(files["disk"])},
                    {"path": str(files["disk2"]), "readonly": True},
                ]
            },
        ),
        ("nat", {"networks": ["user"]}),
        ("nat-mac", {"networks": [{"mode": "user", "mac": "52:54:00:aa:bb:cc"}]}),
        ("no-rng-balloon", {"rng": False, "balloon": True}),
        ("efi", {"boot": {"kind": "efi"}, "disks": [{"path": str(files["disk"])}]}),
    ]


@pytest.mark.capability("vfkit", "boot_linux", "boot_efi", "disk_raw", "net_none", "net_user")
@pytest.mark.capability("vfkit", "rng", "balloon")
def test_every_spec_in_the_matrix_gives_argv_vfkit_parses(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    for label, over in matrix(files):
        s = spec(files, **over)
        argv = plan(VfkitDriver(arch="aarch64", version=(0, 6, 2)), tmp_path, s)
        parsed = parse_argv(argv)
        assert parsed.cpus == s.cpus, label
        assert parsed.memory == s.memory >> 20, label
        assert parsed.restful_uri == "unix:///tmp/vk/abc.rest", label
        assert parsed.pidfile == str(tmp_path / "vm" / "vmm.pid"), label
        kinds = [d.kind for d in parsed.devices]
        assert kinds.count("virtio-serial") == 1, label
        assert ("virtio-rng" in kinds) == s.rng, label
        assert ("virtio-balloon" in kinds) == s.balloon, label
        assert kinds.count("virtio-net") == len(s.networks), label


def test_linux_boot_argv_in_full(tmp_path: Path, files: dict[str, Path]) -> None:
    s = spec(
        files,
        cpus=2,
        memory="1GiB",
        disks=[{"path": str(files["disk"])}],
        networks=[{"mode": "user", "mac": "52:54:00:12:34:56"}],
        boot={"kernel": str(files["kernel"]), "initrd": str(files["initrd"]), "cmdline": "quiet"},
    )
    argv = plan(VfkitDriver(arch="x86_64", version=(0, 6, 2)), tmp_path, s)
    vm = tmp_path / "vm"
    assert argv[1:] == [
        "--cpus", "2",
        "--memory", "1024",
        "--bootloader",
        f'linux,kernel={files["kernel"]},initrd={files["initrd"]},cmdline="quiet console=hvc0"',
        "--device", f"virtio-blk,path={files['disk']},deviceId=vmkit-disk0",
        "--device", "virtio-net,nat,mac=52:54:00:12:34:56",
        "--device", f"virtio-serial,logFilePath={vm / 'serial.log'}",
        "--device", "virtio-rng",
        "--restful-uri", "unix:///tmp/vk/abc.rest",
        "--pidfile", str(vm / "vmm.pid"),
    ]  # fmt: skip


def test_commas_in_the_cmdline_stay_inside_the_quotes(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    s = spec(files, boot={"kernel": str(files["kernel"]), "cmdline": "x=1,2 console=hvc0"})
    argv = plan(VfkitDriver(arch="x86_64"), tmp_path, s)
    kind, opts = parse_argv(argv).bootloader or ("", {})
    assert kind == "linux" and opts["cmdline"] == "x=1,2 console=hvc0"
    assert "initrd" not in opts


def test_efi_boot_uses_a_variable_store_the_vm_owns(tmp_path: Path, files: dict[str, Path]) -> None:
    s = spec(files, boot={"kind": "efi"}, disks=[{"path": str(files["disk"])}])
    argv = plan(VfkitDriver(arch="aarch64"), tmp_path, s)
    assert parse_argv(argv).bootloader == (
        "efi",
        {"variable-store": str(tmp_path / "vm" / "efi-variable-store"), "create": None},
    )


def test_a_readonly_disk_goes_in_as_readonly_usb_mass_storage(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    s = spec(files, disks=[{"path": str(files["disk"]), "readonly": True}])
    argv = plan(VfkitDriver(arch="x86_64"), tmp_path, s)
    assert f"usb-mass-storage,path={files['disk']},readonly" in argv


def test_mac_defaults_to_a_stable_one_per_vm_and_nic(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    s = spec(files, networks=["user"])
    a = plan(VfkitDriver(arch="x86_64"), tmp_path, s)
    b = plan(VfkitDriver(arch="x86_64"), tmp_path, s)
    assert a == b
    mac = parse_argv(a).devices[0].get("mac")
    assert mac is not None and mac.startswith("52:54:00:")


def test_an_existing_console_hvc0_is_not_repeated(tmp_path: Path, files: dict[str, Path]) -> None:
    s = spec(files, boot={"kernel": str(files["kernel"]), "cmdline": "console=hvc0 quiet"})
    argv = plan(VfkitDriver(arch="x86_64"), tmp_path, s)
    assert argv[argv.index("--bootloader") + 1].endswith('cmdline="console=hvc0 quiet"')


# ---- Apple Silicon: the kernel must be a raw arm64 Image --------------------------------------


def test_arm64_raw_image_is_passed_as_is(tmp_path: Path, files: dict[str, Path]) -> None:
    image = bytearray(0x100)
    image[0x38:0x3C] = b"ARM\x64"
    files["kernel"].write_bytes(bytes(image))
    argv = plan(VfkitDriver(arch="aarch64"), tmp_path, spec(files))
    assert f"kernel={files['kernel']}," in argv[argv.index("--bootloader") + 1]


def test_arm64_compressed_kernel_is_booted_from_the_vm_dir_image(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    import gzip

    image = bytearray(0x100)
    image[0x38:0x3C] = b"ARM\x64"
    files["kernel"].write_bytes(gzip.compress(bytes(image)))
    driver = VfkitDriver(arch="aarch64")
    ctx = ctx_for(tmp_path)
    s = spec(files)
    argv = driver.plan(s, ctx).argv
    assert f"kernel={ctx.vm_dir / 'Image'}," in argv[argv.index("--bootloader") + 1]
    assert not (ctx.vm_dir / "Image").exists()  # plan runs nothing
    driver.prepare(s, ctx)
    assert (ctx.vm_dir / "Image").read_bytes() == bytes(image)


def test_an_x86_kernel_on_apple_silicon_is_refused(tmp_path: Path, files: dict[str, Path]) -> None:
    bz = bytearray(0x400)
    bz[0x202:0x206] = b"HdrS"
    files["kernel"].write_bytes(bytes(bz))
    with pytest.raises(InvalidInput, match=r"x86_64 kernel; Apple Silicon"):
        VfkitDriver(arch="aarch64").check(spec(files))


# ---- every rejection --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["kernel", "initrd"])
def test_boot_paths_with_commas_are_refused(
    tmp_path: Path, files: dict[str, Path], key: str
) -> None:
    bad = tmp_path / "a,b"
    bad.write_bytes(b"\0" * 512)
    boot = {"kernel": str(files["kernel"]), key: str(bad)}
    with pytest.raises(InvalidInput, match=rf"boot\.{key}: .*contains a comma.*no quoting"):
        VfkitDriver(arch="x86_64").check(spec(files, boot=boot))


def test_disk_path_with_a_comma_is_refused_naming_the_disk(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    bad = tmp_path / "my,disk.raw"
    bad.write_bytes(b"\0" * 512)
    with pytest.raises(InvalidInput, match=r"disks\[1\]\.path: .*my,disk\.raw.*contains a comma"):
        VfkitDriver(arch="x86_64").check(
            spec(files, disks=[{"path": str(files["disk"])}, {"path": str(bad)}])
        )


def test_serial_log_with_a_comma_is_refused(tmp_path: Path, files: dict[str, Path]) -> None:
    with pytest.raises(InvalidInput, match=r"serial_log: .*contains a comma"):
        VfkitDriver(arch="x86_64").check(spec(files, serial_log=str(tmp_path / "s,log")))


def test_a_vm_dir_with_a_comma_is_refused_at_plan_time(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    ctx = ctx_for(tmp_path)
    ctx.vm_dir = tmp_path / "home,x" / "vm1"
    with pytest.raises(
        InvalidInput, match=r"the VM's folder \(under VMKIT_HOME\): .*contains a comma"
    ):
        VfkitDriver(arch="x86_64").plan(spec(files), ctx)
    ctx = ctx_for(tmp_path)
    ctx.sockets = {"rest": Path("/tmp/run,x/abc.rest")}  # not split: the URI is escaped
    argv = VfkitDriver(arch="x86_64").plan(spec(files), ctx).argv
    assert argv[argv.index("--restful-uri") + 1] == "unix:///tmp/run%2Cx/abc.rest"


def test_a_double_quote_in_the_cmdline_is_refused(files: dict[str, Path]) -> None:
    with pytest.raises(InvalidInput, match=r'boot.cmdline: .*cannot contain a `"`'):
        VfkitDriver(arch="x86_64").check(
            spec(files, boot={"kernel": str(files["kernel"]), "cmdline": 'a="b c"'})
        )


def test_qcow2_is_refused_with_the_convert_command(files: dict[str, Path]) -> None:
    s = spec(files, disks=[{"path": str(files["qcow2"]), "format": "qcow2"}])
    with pytest.raises(
        NotSupported,
        match=r"disks\[0\]: vfkit cannot attach qcow2.*vmkit disk convert --format raw",
    ):
        VfkitDriver(arch="x86_64").check(s)


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
def test_linux_accelerators_are_refused(files: dict[str, Path], accel: str) -> None:
    with pytest.raises(InvalidInput, match=f"accelerator: '{accel}' does not apply to vfkit"):
        VfkitDriver(arch="x86_64").check(spec(files, accelerator=accel))


def test_efi_boot_needs_a_disk_and_no_custom_firmware(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    with pytest.raises(InvalidInput, match=r"needs a bootable disk"):
        VfkitDriver().check(spec(files, boot={"kind": "efi"}))
    with pytest.raises(NotSupported, match=r"Apple's built-in EFI firmware"):
        VfkitDriver().check(
            spec(
                files,
                boot={"kind": "efi", "firmware": str(files["disk2"])},
                disks=[{"path": str(files["disk"])}],
            )
        )


def test_socket_path_over_104_bytes_is_refused(tmp_path: Path, files: dict[str, Path]) -> None:
    ctx = ctx_for(tmp_path)
    ctx.sockets = {"rest": Path("/tmp/" + "x" * 100)}
    with pytest.raises(
        InvalidInput, match=r"is 105 bytes; macOS allows at most 103.*VMKIT_RUNTIME_DIR"
    ):
        VfkitDriver(arch="x86_64").plan(spec(files), ctx)
    ctx.sockets = {"rest": Path("/tmp/" + "x" * 98)}  # 103 bytes: fits with the NUL
    VfkitDriver(arch="x86_64").plan(spec(files), ctx)


def test_a_vsock_port_out_of_range_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"vsock port 0"):
        vf.virtio_vsock(0, Path("/s"))


# ---- installed versions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("vfkit version: v0.6.1", (0, 6, 1)),
        ("krunkit 0.2.1\n", (0, 2, 1)),
        ("vfkit version: v0.5", (0, 5)),
        ("no digits", None),
    ],
)
def test_parse_version(text: str, version: tuple[int, ...] | None) -> None:
    assert vmm_version.parse_version(text) == version


def test_flags_newer_than_the_installed_vfkit_are_refused_naming_the_version(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    with pytest.raises(
        NotSupported,
        match=r"installed vfkit 0\.6\.0 does not know virtio-balloon; it needs vfkit >= 0\.6\.1",
    ):
        plan(VfkitDriver(arch="x86_64", version=(0, 6, 0)), tmp_path, spec(files, balloon=True))
    with pytest.raises(NotSupported, match=r"vfkit 0\.4\.0 does not know virtio-blk deviceId"):
        plan(
            VfkitDriver(arch="x86_64", version=(0, 4, 0)),
            tmp_path,
            spec(files, disks=[{"path": str(files["disk"])}]),
        )


def test_the_version_is_read_from_the_installed_binary_once(
    vmkit_env: Any, tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "vfkit"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'vfkit version: v0.5.1'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    vmm_version._binary_version.cache_clear()
    driver = VfkitDriver(arch="x86_64")
    assert driver.version() == (0, 5, 1)
    with pytest.raises(NotSupported, match=r"vfkit 0\.5\.1 does not know virtio-balloon"):
        plan(driver, tmp_path, spec(files, balloon=True))
    assert VfkitDriver().version() == (0, 5, 1)
    assert calls.read_text().count("x") == 1
    vmm_version._binary_version.cache_clear()  # a new vmkit process: the runtime-dir cache answers
    assert VfkitDriver().version() == (0, 5, 1)
    assert calls.read_text().count("x") == 1
    fake.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'vfkit version: v0.6.2'\n")
    os.utime(fake, ns=(1, 1))  # an upgrade: new size and mtime
    assert VfkitDriver().version() == (0, 6, 2)
    assert calls.read_text().count("x") == 2
    vmm_version._binary_version.cache_clear()


# ---- krunkit ---------------------------------------------------------------------------------


def test_krunkit_boots_efi_with_qcow2_and_raw_formats(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    s = spec(
        files,
        boot={"kind": "efi"},
        disks=[{"path": str(files["qcow2"]), "format": "qcow2"}, {"path": str(files["disk"])}],
    )
    argv = plan(KrunkitDriver(arch="aarch64", version=(1, 0, 0)), tmp_path, s)
    parsed = parse_argv(argv, "krunkit")
    assert argv[0].endswith("krunkit")
    assert f"virtio-blk,path={files['qcow2']},format=qcow2" in argv
    assert f"virtio-blk,path={files['disk']},format=raw" in argv
    assert parsed.pidfile is None
    assert parsed.bootloader is not None and parsed.bootloader[0] == "efi"
    with pytest.raises(GrammarError):  # vfkit itself would not take format=
        parse_argv(argv, "vfkit")


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({}, "krunkit boots only through EFI"),
        (
            {"boot": {"kind": "efi"}, "networks": ["user"]},
            r"networks\[0\]: krunkit has no built-in NAT",
        ),
        ({"boot": {"kind": "efi"}, "balloon": True}, "krunkit has no virtio-balloon"),
    ],
)
def test_krunkit_refusals(files: dict[str, Path], over: dict[str, Any], match: str) -> None:
    over.setdefault("disks", [{"path": str(files["disk"])}])
    with pytest.raises(NotSupported, match=match):
        KrunkitDriver(arch="aarch64").check(spec(files, **over))


def test_krunkit_readonly_disks_are_refused(files: dict[str, Path]) -> None:
    s = spec(files, boot={"kind": "efi"}, disks=[{"path": str(files["disk"]), "readonly": True}])
    with pytest.raises(NotSupported, match=r"cannot attach a disk read-only"):
        KrunkitDriver(arch="aarch64").check(s)


# ---- vmkit's switch -----------------------------------------------------------------------------

SWITCH_SOCK = Path("/tmp/vk/sw-0123456789/sock")


def switch_plan(driver: VfkitDriver, tmp_path: Path, s: Any, sock: Path = SWITCH_SOCK) -> list[str]:
    ctx = ctx_for(tmp_path)
    ctx.switch_sockets = {"lan": sock}
    return driver.plan(s, ctx).argv


@pytest.mark.capability("vfkit", "net_switch")
def test_vfkit_joins_a_switch_through_unix_socket_path(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    nets = [{"mode": "switch", "switch": "lan", "mac": "52:54:00:00:00:0a"}, "user"]
    argv = switch_plan(VfkitDriver(arch="aarch64"), tmp_path, spec(files, networks=nets))
    parsed = parse_argv(argv)
    assert f"virtio-net,unixSocketPath={SWITCH_SOCK},mac=52:54:00:00:00:0a" in argv
    assert [d.kind for d in parsed.devices].count("virtio-net") == 2
    assert any(d.has("nat") for d in parsed.devices)


@pytest.mark.capability("krunkit", "net_switch")
def test_krunkit_joins_a_switch_as_unixgram_announcing_itself(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    s = spec(
        files,
        boot={"kind": "efi"},
        disks=[{"path": str(files["disk"])}],
        networks=[{"mode": "switch", "switch": "lan", "mac": "52:54:00:00:00:0b"}],
    )
    argv = switch_plan(KrunkitDriver(arch="aarch64", version=(1, 0, 0)), tmp_path, s)
    parse_argv(argv, "krunkit")
    want = f"virtio-net,type=unixgram,path={SWITCH_SOCK},mac=52:54:00:00:00:0b,vfkitMagic=on"
    assert want in argv
    with pytest.raises(NotSupported, match=r"krunkit 0\.2\.1 does not know virtio-net"):
        switch_plan(KrunkitDriver(arch="aarch64", version=(0, 2, 1)), tmp_path, s)


def test_a_switch_folder_too_long_for_vfkits_own_socket_is_refused(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    long_dir = Path("/tmp") / ("d" * 70) / "sw-0123456789"  # the switch socket fits, vfkit's not
    s = spec(files, networks=[{"mode": "switch", "switch": "lan"}])
    with pytest.raises(InvalidInput, match=r"switch 'lan'.*VMKIT_RUNTIME_DIR"):
        switch_plan(VfkitDriver(arch="aarch64"), tmp_path, s, long_dir / "sock")


@pytest.mark.parametrize(
    ("net", "match"),
    [
        ({"mode": "tap", "tap": "tap0"}, r"networks\[0\]: TAP devices exist only on Linux"),
    ],
)
def test_linux_only_network_modes_are_refused_by_field(
    files: dict[str, Path], net: dict[str, Any], match: str
) -> None:
    with pytest.raises(NotSupported, match=match):
        VfkitDriver(arch="aarch64").check(spec(files, networks=[net]))


# ---- shared folders --------------------------------------------------------------------------


@pytest.mark.capability("vfkit", "shares")
@pytest.mark.capability("krunkit", "shares")
def test_shares_are_virtio_fs_devices_vfkit_serves_itself(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for driver, flavor, over in (
        (VfkitDriver(arch="aarch64"), "vfkit", {}),
        (KrunkitDriver(arch="aarch64", version=(1, 0, 0)), "krunkit",
         {"boot": {"kind": "efi"}, "disks": [{"path": str(files["disk"])}]}),
    ):  # fmt: skip
        s = spec(files, shares=[{"host": str(src), "tag": "src"}], **over)
        plan = driver.plan(s, ctx_for(tmp_path))
        assert f"virtio-fs,sharedDir={src},mountTag=src" in plan.argv
        parse_argv(plan.argv, flavor)
        assert not any(k.startswith("fs") for k in plan.sockets)  # no virtiofsd to start


def test_a_read_only_share_is_refused_rather_than_given_write_access(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    s = spec(files, shares=[{"host": str(tmp_path), "tag": "ro", "readonly": True}])
    with pytest.raises(
        NotSupported, match=r"shares\[0\] \(ro\): vfkit's virtio-fs has no read-only"
    ):
        VfkitDriver(arch="aarch64").check(s)
    comma = tmp_path / "a,b"
    comma.mkdir()
    with pytest.raises(InvalidInput, match=r"shares\[0\]\.host"):
        VfkitDriver(arch="aarch64").check(spec(files, shares=[{"host": str(comma), "tag": "c"}]))


# ---- Rosetta ---------------------------------------------------------------------------------


@pytest.mark.capability("vfkit", "rosetta")
def test_rosetta_is_shared_on_apple_silicon_and_refused_elsewhere(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    from vmkit.drivers.qemu import QemuDriver

    argv = plan(VfkitDriver(arch="aarch64"), tmp_path, spec(files, rosetta=True))
    assert "rosetta,mountTag=rosetta" in argv
    parse_argv(argv)
    for driver, match in (
        (VfkitDriver(arch="x86_64"), "Rosetta exists only on Apple silicon"),
        (QemuDriver(arch="x86_64"), "the qemu driver cannot share Rosetta"),
    ):
        with pytest.raises(NotSupported, match=match):
            driver.check(spec(files, rosetta=True))
    efi = {"boot": {"kind": "efi"}, "disks": [{"path": str(files["disk"])}]}
    with pytest.raises(NotSupported, match="the krunkit driver cannot share Rosetta"):
        KrunkitDriver(arch="aarch64").check(spec(files, rosetta=True, **efi))


# ---- properties: any path either round-trips through vfkit's grammar or is refused -----------

PATHS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\n"),
    min_size=1,
    max_size=40,
).map(lambda s: Path("/" + s.replace("/", "_")))


@given(PATHS)
def test_a_disk_path_round_trips_or_is_refused_for_its_comma(path: Path) -> None:
    if "," in str(path):
        with pytest.raises(InvalidInput, match="contains a comma"):
            vf.virtio_blk(path, device_id="d0")
        return
    parsed = parse_device(vf.virtio_blk(path, device_id="d0").render())
    assert parsed.get("path") == str(path)
    assert parsed.get("deviceId") == "d0"


@given(st.text(alphabet=st.characters(blacklist_characters='"\0\n\r'), max_size=60))
def test_any_cmdline_without_quotes_round_trips_inside_the_quotes(cmdline: str) -> None:
    from vfkit_grammar import parse_bootloader

    kind, opts = parse_bootloader(vf.linux_bootloader(Path("/k"), Path("/i"), cmdline))
    assert (kind, opts["kernel"], opts["initrd"], opts["cmdline"]) == ("linux", "/k", "/i", cmdline)
