"""drivers/qemu.py: the argv QemuDriver.plan() builds (nothing is run), MACs, exit causes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmkit.drivers.base import ExitCause, LaunchContext
from vmkit.drivers.qemu import QemuDriver, qemu_escape
from vmkit.errors import InvalidInput, NotSupported
from vmkit.hostinfo import is_linux
from vmkit.net.mac import stable_mac
from vmkit.spec import MachineSpec, spec_from_dict


def make_spec(**fields: Any) -> MachineSpec:
    data: dict[str, Any] = {"name": "vm1", "boot": {"kernel": "/k/vmlinux"}, **fields}
    return spec_from_dict(data, check_files=False)


def make_ctx(tmp_path: Path, accelerator: str = "tcg", folder: str = "vm") -> LaunchContext:
    vm_dir = tmp_path / folder
    return LaunchContext(
        vm_dir=vm_dir,
        serial_log=vm_dir / "serial.log",
        events_log=vm_dir / "vmm-events.log",
        sockets={
            "console": tmp_path / "abc.con",
            "qmp": tmp_path / "abc.qmp",
            "ctl": tmp_path / "abc.ctl",
        },
        accelerator=accelerator,
    )


def values(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag` in argv, in order."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def one(argv: list[str], flag: str) -> str:
    found = values(argv, flag)
    assert len(found) == 1, f"{flag} given {len(found)} times in {argv}"
    return found[0]


def plan_argv(tmp_path: Path, arch: str = "x86_64", accel: str = "tcg", **fields: Any) -> list[str]:
    return QemuDriver(arch=arch).plan(make_spec(**fields), make_ctx(tmp_path, accel)).argv


# ---- the fixed part of the command line ----------------------------------------------------


def test_argv_is_all_strings_and_starts_with_the_qemu_binary(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path)
    assert all(isinstance(a, str) for a in argv)
    assert Path(argv[0]).name == "qemu-system-x86_64"


def test_no_default_devices_or_user_config(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path)
    assert "-nodefaults" in argv
    assert "-no-user-config" in argv
    assert one(argv, "-display") == "none"


def test_x86_64_uses_q35(tmp_path: Path) -> None:
    assert one(plan_argv(tmp_path), "-machine") == "q35"


def test_aarch64_uses_virt_and_ttyama0(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path, arch="aarch64")
    assert one(argv, "-machine") == "virt"
    assert one(argv, "-cpu") == "max,pauth-impdef=on"  # TCG: the cheap pointer-auth
    assert one(argv, "-append") == "console=ttyAMA0"
    assert Path(argv[0]).name == "qemu-system-aarch64"


@pytest.mark.parametrize("accel", ["tcg", "kvm", "hvf"])
def test_accel_is_the_one_in_the_launch_context(tmp_path: Path, accel: str) -> None:
    spec = make_spec(accelerator="auto")
    plan = QemuDriver(arch="x86_64").plan(spec, make_ctx(tmp_path, accel))
    assert one(plan.argv, "-accel") == accel
    assert plan.accelerator == accel


def test_host_cpu_only_with_hardware_acceleration(tmp_path: Path) -> None:
    assert values(plan_argv(tmp_path, accel="tcg"), "-cpu") == []
    assert one(plan_argv(tmp_path, accel="kvm"), "-cpu") == "host"


@pytest.mark.parametrize(
    ("memory", "expected"), [("16M", "16M"), ("256MiB", "256M"), ("1G", "1024M"), ("3GiB", "3072M")]
)
def test_memory_in_mib(tmp_path: Path, memory: str, expected: str) -> None:
    assert one(plan_argv(tmp_path, memory=memory), "-m") == expected


@pytest.mark.parametrize("cpus", [1, 4, 256])
def test_cpus(tmp_path: Path, cpus: int) -> None:
    assert one(plan_argv(tmp_path, cpus=cpus), "-smp") == str(cpus)


def test_vm_name_is_in_the_guest_name(tmp_path: Path) -> None:
    assert one(plan_argv(tmp_path), "-name") == "guest=vmkit-vm1,debug-threads=on"


@pytest.mark.skipif(not is_linux(), reason="the seccomp sandbox is Linux-only")
def test_seccomp_sandbox_on_linux(tmp_path: Path) -> None:
    sandbox = one(plan_argv(tmp_path), "-sandbox")
    assert sandbox.startswith("on,")
    assert "spawn=deny" in sandbox


def test_shutdown_requests_are_traced_to_the_events_log(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    argv = QemuDriver(arch="x86_64").plan(make_spec(), ctx).argv
    assert one(argv, "-trace") == (f"enable=qemu_system_shutdown_request,file={ctx.events_log}")


def test_serial_chardev_logs_to_the_serial_log(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    argv = QemuDriver(arch="x86_64").plan(make_spec(), ctx).argv
    serial = [c for c in values(argv, "-chardev") if "id=serial0" in c]
    assert serial == [
        f"socket,id=serial0,path={ctx.sockets['console']},server=on,wait=off,"
        f"logfile={ctx.serial_log},logappend=off"
    ]
    assert one(argv, "-serial") == "chardev:serial0"


def test_qmp_chardev_and_control_monitor(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    plan = QemuDriver(arch="x86_64").plan(make_spec(), ctx)
    qmp = [c for c in values(plan.argv, "-chardev") if "id=qmp0" in c]
    assert qmp == [f"socket,id=qmp0,path={ctx.sockets['qmp']},server=on,wait=off"]
    assert one(plan.argv, "-mon") == "chardev=qmp0,mode=control"
    # the control port's FIFOs are recorded, not their common prefix (no such file)
    assert plan.sockets == {k: v for k, v in ctx.sockets.items() if k != "ctl"}


def test_commas_in_log_and_socket_paths_are_doubled(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, folder="a,b")
    ctx.sockets = {
        "console": tmp_path / "c,on",
        "qmp": tmp_path / "q,mp",
        "ctl": tmp_path / "c,tl",
    }
    argv = QemuDriver(arch="x86_64").plan(make_spec(), ctx).argv
    chardevs = " ".join(values(argv, "-chardev"))
    assert f"logfile={tmp_path}/a,,b/serial.log," in chardevs
    assert f"path={tmp_path}/c,,on," in chardevs
    assert f"path={tmp_path}/q,,mp," in chardevs
    assert f"pipe,id=ctl0,path={tmp_path}/c,,tl" in chardevs
    assert one(argv, "-trace").endswith(f"file={tmp_path}/a,,b/vmm-events.log")


# ---- boot ----------------------------------------------------------------------------------


def test_kernel_without_initrd(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path)
    assert one(argv, "-kernel") == "/k/vmlinux"
    assert "-initrd" not in argv


def test_kernel_with_initrd(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path, boot={"kernel": "/k/vmlinux", "initrd": "/k/initrd.img"})
    assert one(argv, "-initrd") == "/k/initrd.img"


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("", "console=ttyS0"),
        ("quiet", "console=ttyS0 quiet"),
        ("quiet console=hvc0", "quiet console=hvc0"),
        ("console=ttyS1,115200", "console=ttyS1,115200"),
        ("netconsole=6666@10.0.0.1/eth0", "console=ttyS0 netconsole=6666@10.0.0.1/eth0"),
    ],
)
def test_console_is_prepended_only_without_a_console_parameter(
    tmp_path: Path, cmdline: str, expected: str
) -> None:
    argv = plan_argv(tmp_path, boot={"kernel": "/k/vmlinux", "cmdline": cmdline})
    assert one(argv, "-append") == expected


def test_efi_boot_loads_split_flash_or_a_single_bios_image(tmp_path: Path) -> None:
    from vmkit.errors import InvalidInput

    code, template, single = tmp_path / "MY_CODE.fd", tmp_path / "MY_VARS.fd", tmp_path / "FW.fd"
    for f in (code, template, single):
        f.write_bytes(b"\0" * 4096)
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * 512)
    driver = QemuDriver(arch="x86_64")
    with pytest.raises(InvalidInput, match="needs a bootable disk image"):
        driver.check(spec_from_dict({"name": "vm1", "boot": {"kind": "efi"}}, check_files=False))

    def efi_spec(firmware: Path) -> Any:
        return spec_from_dict(
            {"name": "vm1", "boot": {"kind": "efi", "firmware": str(firmware)},
             "disks": [{"path": str(disk)}, {"path": str(disk), "readonly": True}]},
            check_files=False,
        )  # fmt: skip

    ctx = make_ctx(tmp_path)
    ctx.vm_dir.mkdir()
    argv = driver.plan(efi_spec(code), ctx).argv
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={code}" in argv
    assert f"if=pflash,format=raw,unit=1,file={ctx.vm_dir / 'efi-vars.fd'}" in argv
    assert "-kernel" not in argv and "-append" not in argv
    assert "virtio-blk-pci,drive=disk1,id=vd1,bootindex=1" in argv
    assert not (ctx.vm_dir / "efi-vars.fd").exists()  # plan (and --dry-run) make nothing
    driver.prepare(efi_spec(code), ctx)
    assert (ctx.vm_dir / "efi-vars.fd").read_bytes() == template.read_bytes()
    assert one(driver.plan(efi_spec(single), ctx).argv, "-bios") == str(single)


def test_unsupported_host_arch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotSupported, match="riscv64"):
        QemuDriver(arch="riscv64").check(make_spec())


@pytest.mark.skipif(not is_linux(), reason="hvf is only refused on Linux")
def test_hvf_on_linux_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="hvf"):
        QemuDriver(arch="x86_64").check(make_spec(accelerator="hvf"))


# ---- disks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disk", "fmt", "ro"),
    [
        ({"path": "/img/a.raw"}, "raw", "off"),
        ({"path": "/img/a.qcow2", "format": "qcow2"}, "qcow2", "off"),
        ({"path": "/img/a.raw", "readonly": True}, "raw", "on"),
        ({"path": "/img/a.qcow2", "format": "qcow2", "readonly": True}, "qcow2", "on"),
    ],
)
def test_disk_blockdevs(tmp_path: Path, disk: dict[str, Any], fmt: str, ro: str) -> None:
    argv = plan_argv(tmp_path, disks=[disk])
    assert values(argv, "-blockdev") == [
        f"driver=file,node-name=file0,filename={disk['path']},read-only={ro}",
        f"driver={fmt},node-name=disk0,file=file0,read-only={ro}",
    ]
    assert "virtio-blk-pci,drive=disk0,id=vd0" in values(argv, "-device")


def test_several_disks_get_distinct_nodes(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path, disks=[{"path": "/a"}, {"path": "/b", "readonly": True}])
    blockdevs = values(argv, "-blockdev")
    assert len(blockdevs) == 4
    assert "filename=/b,read-only=on" in blockdevs[2]
    assert blockdevs[3] == "driver=raw,node-name=disk1,file=file1,read-only=on"
    devices = values(argv, "-device")
    assert "virtio-blk-pci,drive=disk0,id=vd0" in devices
    assert "virtio-blk-pci,drive=disk1,id=vd1" in devices


def test_commas_in_disk_paths_are_doubled(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path, disks=[{"path": "/img/a,b/disk,1.raw"}])
    assert values(argv, "-blockdev")[0] == (
        "driver=file,node-name=file0,filename=/img/a,,b/disk,,1.raw,read-only=off"
    )


def test_no_disks_no_blockdevs(tmp_path: Path) -> None:
    assert values(plan_argv(tmp_path), "-blockdev") == []


# ---- networks and devices ------------------------------------------------------------------


def test_user_network_with_stable_mac(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path, networks="user")
    assert one(argv, "-netdev") == "user,id=net0"
    assert f"virtio-net-pci,netdev=net0,mac={stable_mac('vm1', 0)},id=nic0" in values(
        argv, "-device"
    )


def test_user_network_with_explicit_mac(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path, networks=[{"mode": "user", "mac": "02:00:00:AA:BB:CC"}])
    assert "virtio-net-pci,netdev=net0,mac=02:00:00:aa:bb:cc,id=nic0" in values(argv, "-device")


def test_two_nics_get_different_macs(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path, networks=["user", "user"])
    assert values(argv, "-netdev") == ["user,id=net0", "user,id=net1"]
    macs = [m.group(1) for d in values(argv, "-device") if (m := re.search(r"mac=([^,]+)", d))]
    assert len(macs) == 2
    assert macs[0] != macs[1]


def test_no_network_means_no_netdev(tmp_path: Path) -> None:
    argv = plan_argv(tmp_path, networks="none")
    assert "-netdev" not in argv
    assert not any("virtio-net" in d for d in values(argv, "-device"))


@pytest.mark.parametrize(
    ("rng", "balloon"), [(True, False), (False, False), (True, True), (False, True)]
)
def test_rng_and_balloon_devices(tmp_path: Path, rng: bool, balloon: bool) -> None:
    devices = values(plan_argv(tmp_path, rng=rng, balloon=balloon), "-device")
    assert ("virtio-rng-pci" in devices) is rng
    assert ("virtio-balloon-pci" in devices) is balloon


def test_plan_is_pure_and_repeatable(tmp_path: Path) -> None:
    spec = make_spec(networks="user", disks=[{"path": "/a"}])
    driver = QemuDriver(arch="x86_64")
    ctx = make_ctx(tmp_path)
    first = driver.plan(spec, ctx)
    assert driver.plan(spec, ctx).argv == first.argv
    assert not ctx.vm_dir.exists()
    assert first.to_json()["argv"] == first.argv
    fifos = {k: str(v) for k, v in first.fifos.items()}
    recorded = {k: str(v) for k, v in ctx.sockets.items() if k != "ctl"}
    assert first.to_json()["sockets"] == recorded | fifos
    assert not any(Path(p).exists() for p in fifos.values())  # made by the launch, not plan


def test_qemu_escape() -> None:
    assert qemu_escape("a,b,,c") == "a,,b,,,,c"
    assert qemu_escape(Path("/x,y")) == "/x,,y"
    assert qemu_escape("plain") == "plain"


# ---- stable_mac ----------------------------------------------------------------------------

MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@given(name=st.from_regex(r"[a-z0-9_][a-z0-9_.-]{0,62}", fullmatch=True), index=st.integers(0, 7))
def test_stable_mac_is_deterministic_unicast_and_locally_administered(
    name: str, index: int
) -> None:
    mac = stable_mac(name, index)
    assert mac == stable_mac(name, index)
    assert MAC_RE.fullmatch(mac)
    first = int(mac[:2], 16)
    assert first & 2, "locally administered bit must be set"
    assert not first & 1, "must be unicast"
    make_spec(networks=[{"mac": mac}])  # and the spec accepts it


def test_stable_mac_differs_by_name_and_index() -> None:
    macs = {stable_mac(n, i) for n in ("a", "b", "vm1", "vm2") for i in range(4)}
    assert len(macs) == 16


# ---- exit_cause ----------------------------------------------------------------------------


def _events(tmp_path: Path, text: str | None) -> LaunchContext:
    ctx = make_ctx(tmp_path)
    if text is not None:
        ctx.events_log.parent.mkdir(parents=True, exist_ok=True)
        ctx.events_log.write_text(text)
    return ctx


def _trace(reason: int) -> str:
    return f"12345@1700000000.123456:qemu_system_shutdown_request reason={reason}\n"


def test_guest_shutdown_is_a_clean_exit(tmp_path: Path) -> None:
    ctx = _events(tmp_path, _trace(6))
    assert QemuDriver(arch="x86_64").exit_cause(ctx) == ExitCause(True, "guest shutdown")


def test_guest_panic_is_not_clean(tmp_path: Path) -> None:
    ctx = _events(tmp_path, _trace(8))
    assert QemuDriver(arch="x86_64").exit_cause(ctx) == ExitCause(False, "guest panic")


def test_host_signal_is_clean(tmp_path: Path) -> None:
    cause = QemuDriver(arch="x86_64").exit_cause(_events(tmp_path, _trace(4)))
    assert cause is not None
    assert cause.clean


@pytest.mark.parametrize("text", [None, "", "some other trace line\n"])
def test_no_shutdown_request_means_no_cause(tmp_path: Path, text: str | None) -> None:
    assert QemuDriver(arch="x86_64").exit_cause(_events(tmp_path, text)) is None


def test_the_last_shutdown_request_wins(tmp_path: Path) -> None:
    ctx = _events(tmp_path, _trace(7) + "noise\n" + _trace(8))
    assert QemuDriver(arch="x86_64").exit_cause(ctx) == ExitCause(False, "guest panic")


def test_unknown_cause_number_is_not_clean(tmp_path: Path) -> None:
    assert QemuDriver(arch="x86_64").exit_cause(_events(tmp_path, _trace(42))) == ExitCause(
        False, "cause 42"
    )


# ---- advanced lifecycle: control port, hotplug slots, restore / incoming ---------------------


def test_control_port_is_a_named_virtio_serial_port_on_two_fifos(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    plan = QemuDriver(arch="x86_64").plan(make_spec(), ctx)
    devices = values(plan.argv, "-device")
    assert "virtio-serial-pci,id=vser0" in devices
    assert "virtserialport,bus=vser0.0,chardev=ctl0,name=org.vmkit.ctl" in devices
    # a pipe chardev: always connected, so the guest agent's read blocks (no polling)
    assert f"pipe,id=ctl0,path={ctx.sockets['ctl']}" in values(plan.argv, "-chardev")
    ctl = ctx.sockets["ctl"]
    assert plan.fifos == {"ctl.in": Path(f"{ctl}.in"), "ctl.out": Path(f"{ctl}.out")}
    assert plan.all_sockets()["ctl.in"] == Path(f"{ctl}.in")  # unlinked at stop and gc


def test_empty_root_ports_for_hotplug(tmp_path: Path) -> None:
    devices = values(plan_argv(tmp_path), "-device")
    ports = [d for d in devices if d.startswith("pcie-root-port")]
    assert ports == [f"pcie-root-port,id=hp{i},bus=pcie.0,chassis={i + 1}" for i in range(4)]


def test_restore_and_incoming_plans_add_incoming_and_change_nothing_else(tmp_path: Path) -> None:
    driver = QemuDriver(arch="x86_64")
    spec, ctx = make_spec(), make_ctx(tmp_path)
    base = driver.plan(spec, ctx).argv
    restore = driver.plan_restore(spec, ctx, tmp_path, {"state_file": "state.qemu"}).launch.argv
    assert restore == [*base, "-incoming", "defer"]
    incoming = driver.plan_incoming(spec, ctx, "unix:/tmp/x.mig").argv
    assert incoming == [*base, "-incoming", "unix:/tmp/x.mig"]


def test_a_shared_ram_snapshot_restores_with_a_private_file_mapping(tmp_path: Path) -> None:
    driver = QemuDriver(arch="x86_64")
    spec, ctx = make_spec(), make_ctx(tmp_path)
    base = driver.plan(spec, ctx).argv
    snap = tmp_path / "snap,dir"
    meta = {"state_file": "s", "shared_ram": {"file": "ram.qemu", "bytes": spec.memory}}
    restore = driver.plan_restore(spec, ctx, snap, meta).launch.argv
    assert restore == [
        *base,
        "-object",  # the default RAM block's id: its stream names it like any VM's
        f"memory-backend-file,id=pc.ram,size={spec.memory >> 20}M,"
        f"mem-path={tmp_path}/snap,,dir/ram.qemu,share=off",
        "-machine",
        "memory-backend=pc.ram",
        "-incoming",
        "defer",
    ]
    arm = QemuDriver(arch="aarch64").plan_restore(spec, ctx, snap, meta).launch.argv
    assert "memory-backend=mach-virt.ram" in arm


def test_ram_of_guests_with_a_balloon_or_shares_is_not_shared(tmp_path: Path) -> None:
    from vmkit.drivers.qemu import shared_ram

    assert shared_ram.refusal(make_spec()) is None
    assert "balloon" in str(shared_ram.refusal(make_spec(balloon=True)))


def test_the_ram_converter_gives_slirp_only_to_the_nics_that_had_it(tmp_path: Path) -> None:
    """slirp puts its state in the stream; a copy on a switch or TAP cannot load a stream
    with a slirp section (tests/e2e/test_restore_addresses.py restores one for real)."""
    from vmkit.drivers.qemu import shared_ram

    nets = [{"mode": "nat"}, {"mode": "switch", "switch": "lan"}, {"mode": "tap", "tap": "vk0"}]
    (tmp_path / "work").mkdir()
    argv = shared_ram._converter_argv(
        QemuDriver(arch="x86_64"), make_spec(networks=nets), tmp_path, [], tmp_path / "work", "tcg"
    )
    assert values(argv, "-netdev") == [
        "user,id=net0",
        "hubport,id=net1,hubid=1",
        "hubport,id=net2,hubid=2",
    ]


def test_qemu_declares_the_advanced_verbs() -> None:
    caps = QemuDriver().capabilities
    assert caps.pause and caps.snapshot and caps.migrate and caps.reboot
    assert caps.hotplug_disk and caps.hotplug_net and caps.restore_readiness


def test_smp_topology_and_max_cpus(tmp_path: Path) -> None:
    argv = plan_argv(
        tmp_path, cpus=2, max_cpus=4, topology={"threads_per_core": 2, "cores_per_die": 2}
    )
    assert one(argv, "-smp") == "2,maxcpus=4,sockets=1,dies=1,cores=2,threads=2"


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"hugepages": True}, "hugepages"),
        ({"disks": [{"path": "/d.img", "iops": 10}]}, "I/O limits"),
    ],
)
def test_fields_qemu_does_not_wire_yet_are_refused(fields: dict[str, Any], word: str) -> None:
    with pytest.raises(NotSupported, match=word):
        QemuDriver(arch="x86_64").check(make_spec(**fields))


def test_vsock_cid_becomes_vhost_vsock_only_where_the_host_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMKIT_VHOST_VSOCK", str(tmp_path / "absent"))
    with pytest.raises(NotSupported, match=r"vsock_cid: QEMU's vhost-vsock needs .*modprobe"):
        QemuDriver(arch="x86_64").check(make_spec(vsock_cid=7))
    (tmp_path / "vhost-vsock").touch()
    monkeypatch.setenv("VMKIT_VHOST_VSOCK", str(tmp_path / "vhost-vsock"))
    argv = plan_argv(tmp_path, vsock_cid=7)
    assert "vhost-vsock-pci,id=vsock0,guest-cid=7" in argv
    assert not any("vhost-vsock" in a for a in plan_argv(tmp_path))
    with pytest.raises(InvalidInput, match=r"vsock_cid: 4294967295 is out of range"):
        QemuDriver(arch="x86_64").check(make_spec(vsock_cid=2**32 - 1))
