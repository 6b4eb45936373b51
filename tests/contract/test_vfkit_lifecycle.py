"""The whole vfkit lifecycle through vmkit's Machine layer and CLI, with the vfkit TEST DOUBLE
(tests/contract/vfkit_double.py) on PATH as `vfkit`: start, readiness, pause/resume, inspect,
a second process re-adopting the VM, every step of the stop escalation (Stop -> HardStop ->
SIGTERM -> SIGKILL), guest poweroff and VMM crash. Contract testing only: nothing here ran
on a Mac, and docs/capabilities.md says so."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vmkit.machine import Host, Machine
from vmkit.spec import spec_from_dict


def start_vm(boot: dict[str, Any], name: str = "mac1", **over: Any) -> Machine:
    spec = spec_from_dict({"name": name, "driver": "vfkit", "boot": boot, **over})
    host = Host()
    machine = host.create(spec)
    machine.start()
    st = machine.wait_ready(20)
    assert st.state == "ready", st
    return machine


@pytest.mark.capability("vfkit", "boot_linux", "readiness", "graceful_stop", "crash_detection")
def test_start_ready_and_stop_via_the_stop_request(fake_vfkit: Any, boot: dict[str, Any]) -> None:
    machine = start_vm(boot)
    rt = machine.runtime().to_json()
    assert rt["argv"][0].endswith("/vfkit")
    assert (machine.dir / "vmm.pid").read_text().strip() == str(rt["pid"])
    result = machine.stop(timeout=10)
    assert result.step == "acpi"
    st = machine.status()
    assert st.state == "stopped" and "acpi" in (st.reason or "")


@pytest.mark.capability("vfkit", "graceful_stop")
@pytest.mark.parametrize(
    ("switches", "step"),
    [
        (("ignore-stop",), "HardStop"),
        (("ignore-stop", "refuse-hardstop"), "sigterm"),
        (("ignore-stop", "refuse-hardstop", "ignore-sigterm"), "sigkill"),
    ],
)
def test_stop_escalates_and_says_which_step_ended_it(
    fake_vfkit: Any, boot: dict[str, Any], switches: tuple[str, ...], step: str
) -> None:
    fake_vfkit(*switches)
    machine = start_vm(boot)
    result = machine.stop(timeout=0.3)
    assert result.step == step
    assert machine.status().state == "stopped"
    assert not Path(machine.runtime().to_json()["sockets"]["rest"]).exists()


@pytest.mark.capability("vfkit", "pause")
def test_pause_resume_through_the_machine(fake_vfkit: Any, boot: dict[str, Any]) -> None:
    machine = start_vm(boot)
    assert machine.pause().state == "paused"
    assert machine.resume().state == "ready"
    machine.kill()


@pytest.mark.capability("vfkit", "readopt", "kill")
def test_a_second_process_sees_inspects_and_stops_it(
    fake_vfkit: Any, boot: dict[str, Any], cli: Any
) -> None:
    start_vm(boot, networks=["user"])
    ls = cli.json("ls")
    assert [(v["name"], v["state"], v["driver"]) for v in ls] == [("mac1", "ready", "vfkit")]
    data = cli.json("inspect", "mac1")
    assert data["vmm"]["state"]["state"] == "VirtualMachineStateRunning"
    devices = data["vmm"]["inspect"]["devices"]
    assert {"kind": "virtio-net", "nat": None, "mac": devices[0]["mac"]} in devices
    text = cli.ok("inspect", "mac1").stdout
    assert 'vmm state:   {"canHardStop": true' in text
    assert '"vcpus": 1' in text
    out = cli.ok("kill", "mac1").stdout
    assert "killed" in out
    after = cli.json("ls")[0]
    assert (after["state"], after["reason"]) == ("stopped", "stopped by `vmkit kill` (sigkill)")


@pytest.mark.capability("vfkit", "crash_detection")
def test_guest_poweroff_is_a_clean_stop(fake_vfkit: Any, boot: dict[str, Any]) -> None:
    fake_vfkit("poweroff-after-ready")
    machine = start_vm(boot)
    rt = machine.runtime().to_json()
    from vmkit.process import ProcessRef

    assert ProcessRef(rt["pid"], rt["create_time"]).wait_gone(10)
    st = machine.status()
    assert st.state == "stopped", st
    assert st.reason == "VMM exited: guest stopped"


@pytest.mark.capability("vfkit", "crash_detection")
def test_a_vmm_error_is_failed_with_the_log_line(fake_vfkit: Any, boot: dict[str, Any]) -> None:
    fake_vfkit("crash-after-ready")
    machine = start_vm(boot)
    rt = machine.runtime().to_json()
    from vmkit.process import ProcessRef

    assert ProcessRef(rt["pid"], rt["create_time"]).wait_gone(10)
    st = machine.status()
    assert st.state == "failed"
    assert "virtualization error" in (st.reason or "")
    assert any("virtualization error" in line for line in st.vmm_log_tail)


@pytest.mark.capability("vfkit", "net_user")
def test_the_guest_ip_comes_from_the_dhcp_leases_when_the_guest_did_not_say(
    fake_vfkit: Any, boot: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmkit.drivers import dhcpd_leases

    fixture = Path(__file__).resolve().parent.parent / "unit" / "fixtures" / "dhcpd_leases"
    monkeypatch.setattr(dhcpd_leases, "LEASES_PATH", fixture)
    machine = start_vm(boot, networks=[{"mode": "user", "mac": "52:54:00:12:34:56"}])
    assert machine.status().ip == "192.168.64.7"  # the double printed `VMKIT_READY -`
    machine.kill()


def test_a_killed_vmm_is_failed(fake_vfkit: Any, boot: dict[str, Any]) -> None:
    machine = start_vm(boot)
    os.kill(machine.runtime().to_json()["pid"], signal.SIGKILL)
    from vmkit.process import ProcessRef

    rt = machine.runtime().to_json()
    assert ProcessRef(rt["pid"], rt["create_time"]).wait_gone(10)
    st = machine.status()
    assert st.state == "failed" and "VMM exited unexpectedly" in (st.reason or "")


def test_console_is_refused_with_the_alternative(
    fake_vfkit: Any, boot: dict[str, Any], cli: Any
) -> None:
    start_vm(boot)
    proc = cli("console", "mac1")
    assert proc.returncode == 1
    assert "the vfkit driver cannot attach an interactive console" in proc.stderr
    assert "vmkit logs -f mac1" in proc.stderr


def test_start_dry_run_prints_the_vfkit_argv(
    fake_vfkit: Any, boot: dict[str, Any], cli: Any
) -> None:
    cli.ok(
        "create", "m2", "--driver", "vfkit", "--kernel", boot["kernel"], "--initrd", boot["initrd"]
    )
    plan = cli.json("start", "m2", "--dry-run")
    assert plan["accelerator"] == "hvf"
    assert "--restful-uri" in plan["argv"] and "--pidfile" in plan["argv"]


def test_an_old_vfkit_is_refused_before_anything_runs(
    fake_vfkit: Any, boot: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VFKIT_DOUBLE_VERSION", "0.6.0")
    spec = spec_from_dict({"name": "old", "driver": "vfkit", "boot": boot, "balloon": True})
    machine = Host().create(spec)
    from vmkit.errors import NotSupported

    with pytest.raises(
        NotSupported, match=r"vfkit 0\.6\.0 does not know virtio-balloon.*>= 0\.6\.1"
    ):
        machine.start()
    assert machine.status().state == "created"


def test_without_vfkit_start_names_the_binary_and_how_to_get_it(
    vmkit_env: Any, boot: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    machine = Host().create(spec_from_dict({"name": "nob", "driver": "vfkit", "boot": boot}))
    from vmkit.errors import VmkitError

    with pytest.raises(
        VmkitError, match=r"vfkit not found on PATH: vfkit runs only on macOS: `brew install vfkit`"
    ):
        machine.start()


# ---- krunkit (the same double in its krunkit flavour: GET /vm/state and POST Stop only) ----


def start_krunkit(tmp_path: Path, name: str = "kr1") -> Machine:
    raw = tmp_path / "root.raw"
    raw.write_bytes(b"\0" * 4096)
    qcow = tmp_path / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "1M"], check=True)
    spec = spec_from_dict(
        {
            "name": name,
            "driver": "krunkit",
            "boot": {"kind": "efi"},
            "disks": [{"path": str(raw)}, {"path": str(qcow), "format": "qcow2"}],
        }
    )
    machine = Host().create(spec)
    machine.start()
    assert machine.wait_ready(20).state == "ready"
    return machine


@pytest.mark.capability("krunkit", "boot_efi", "disk_raw", "disk_qcow2", "net_none")
@pytest.mark.capability("krunkit", "readiness", "graceful_stop", "readopt")
def test_krunkit_efi_boot_with_raw_and_qcow2_then_stop(
    fake_vfkit: Any, tmp_path: Path, cli: Any
) -> None:
    machine = start_krunkit(tmp_path)
    argv = machine.runtime().to_json()["argv"]
    assert argv[0].endswith("/krunkit") and "--pidfile" not in argv
    assert [v["state"] for v in cli.json("ls")] == ["ready"]
    assert "inspect" not in cli.json("inspect", "kr1")["vmm"]
    assert machine.stop(timeout=5).step == "acpi"


@pytest.mark.capability("krunkit", "graceful_stop", "kill")
def test_krunkit_stop_skips_the_missing_hardstop(fake_vfkit: Any, tmp_path: Path) -> None:
    fake_vfkit("ignore-stop")
    machine = start_krunkit(tmp_path)
    assert machine.stop(timeout=0.3).step == "sigterm"
    machine2 = start_krunkit(tmp_path, "kr2")
    assert machine2.kill().step == "sigkill"


def test_krunkit_pause_is_refused_before_touching_the_vm(fake_vfkit: Any, tmp_path: Path) -> None:
    from vmkit.errors import NotSupported

    machine = start_krunkit(tmp_path)
    with pytest.raises(NotSupported, match="the krunkit driver cannot pause"):
        machine.pause()
    assert machine.status().state == "ready"


@pytest.mark.capability("vfkit", "disk_clone", "cloud_init")
def test_vm_owned_disks_and_the_seed_iso_reach_vfkit_as_raw_files(
    fake_vfkit: Any, boot: dict[str, Any], tmp_path: Path
) -> None:
    """A qcow2 `clone:` base becomes the VM's own raw copy (the double, like vfkit, refuses a
    qcow2 header), a `size:` disk a raw file, and the seed ISO read-only USB storage."""
    from vmkit.storage import disk

    base = tmp_path / "base.qcow2"
    disk.create(base, 32 << 20, "qcow2")
    machine = start_vm(
        boot,
        disks=[{"clone": str(base)}, {"size": "16M"}],
        cloud_init={"hostname": "mac-1"},
    )
    devices = [
        a for a in machine.runtime().to_json()["argv"] if a.startswith(("virtio-blk", "usb-mass"))
    ]
    d0, d1, seed = machine.dir / "disk0.raw", machine.dir / "disk1.raw", machine.dir / "seed.iso"
    assert devices == [
        f"virtio-blk,path={d0},deviceId=vmkit-disk0",
        f"virtio-blk,path={d1},deviceId=vmkit-disk1",
        f"usb-mass-storage,path={seed},readonly",
    ]
    assert disk.sniff_format(d0) == "raw" and d0.stat().st_size == 32 << 20
    assert disk.sniff_format(base) == "qcow2"  # the base is untouched
    machine.kill()
    machine.delete()
    assert not d0.exists() and not seed.exists()


@pytest.mark.capability("krunkit", "disk_clone")
def test_krunkit_gets_a_qcow2_clone_as_qcow2(fake_vfkit: Any, tmp_path: Path) -> None:
    from vmkit.storage import disk

    base = tmp_path / "base.qcow2"
    disk.create(base, 32 << 20, "qcow2")
    spec = spec_from_dict(
        {
            "name": "kr1",
            "driver": "krunkit",
            "boot": {"kind": "efi"},
            "disks": [{"clone": str(base)}],
        }
    )
    machine = Host().create(spec)
    machine.start()
    assert machine.wait_ready(20).state == "ready"
    made = Path(machine.spec_json["disks"][0]["path"])
    assert made.parent == machine.dir and disk.sniff_format(made) == "qcow2"
    assert f"virtio-blk,path={made},format=qcow2" in machine.runtime().to_json()["argv"]
    machine.kill()
    machine.delete()


# ---- macOS guests: ready without a readiness line ---------------------------------------------


@pytest.fixture
def macos_vm(
    fake_vfkit: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Machine]:
    """A macOS guest on the double, as on an Apple silicon Mac; bootpd's leases in tmp."""
    from vmkit.drivers import vfkit

    monkeypatch.setattr(vfkit.driver, "machine_arch", lambda: "aarch64")
    leases = tmp_path / "dhcpd_leases"
    monkeypatch.setenv("VMKIT_DHCPD_LEASES", str(leases))
    monkeypatch.setenv("VFKIT_DOUBLE_LEASES", str(leases))
    from test_vfkit_macos_guest import make as macos_spec  # the platform files, written

    def make(name: str = "mac1", **over: Any) -> Machine:
        spec = macos_spec(tmp_path, name, **over)
        machine = Host().create(spec)
        machine.start()
        return machine

    return make


def stale_lease(path: Path, mac: str, ip: str) -> None:
    short = ":".join(f"{int(o, 16):x}" for o in mac.split(":"))
    path.write_text(
        f"{{\n\tname=old\n\tip_address={ip}\n\thw_address=1,{short}\n"
        f"\tidentifier=1,{short}\n\tlease={int(time.time()) + 600:#x}\n}}\n"
    )


@pytest.mark.capability("vfkit", "boot_macos", "readiness")
def test_a_macos_guest_is_ready_with_a_lease_from_this_boot_not_an_old_one(
    macos_vm: Callable[..., Machine], tmp_path: Path
) -> None:
    mac = "52:54:00:0a:0b:0c"
    stale_lease(tmp_path / "dhcpd_leases", mac, "192.168.64.99")  # from an earlier boot
    machine = macos_vm(networks=[{"mode": "user", "mac": mac}])
    st = machine.wait_ready(10)
    assert st.state == "ready" and st.ip == "192.168.64.10", st
    assert not machine.serial_log.exists() or "VMKIT_READY" not in machine.serial_log.read_text()
    machine.kill()


def test_a_macos_guest_without_a_nic_is_ready_once_running(
    macos_vm: Callable[..., Machine],
) -> None:
    machine = macos_vm(networks=[])
    st = machine.wait_ready(10)
    assert st.state == "ready" and st.ip is None
    machine.kill()


def test_a_macos_guest_that_gets_no_lease_times_out_saying_what_was_awaited(
    macos_vm: Callable[..., Machine], fake_vfkit: Callable[..., None]
) -> None:
    from vmkit.errors import ReadinessTimeout

    fake_vfkit("no-lease")
    machine = macos_vm(networks=["user"])
    with pytest.raises(ReadinessTimeout, match=r"was not running with a fresh DHCP lease for"):
        machine.wait_ready(1.5)
    machine.kill()


def test_ls_sees_a_macos_guest_become_ready_without_anyone_waiting(
    macos_vm: Callable[..., Machine],
) -> None:
    machine = macos_vm(networks=[{"mode": "user", "mac": "52:54:00:0a:0b:0d"}])
    deadline = time.monotonic() + 10
    while (st := Host().get(machine.name).status()).state != "ready":
        assert time.monotonic() < deadline, st
        time.sleep(0.1)
    assert st.ip == "192.168.64.10"
    machine.kill()


@pytest.mark.capability("vfkit", "shares")
def test_a_vm_with_a_share_starts_no_virtiofsd(
    fake_vfkit: Any, boot: dict[str, Any], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    machine = start_vm(boot, shares=[{"host": str(src), "tag": "src"}])
    rt = machine.runtime().to_json()
    assert f"virtio-fs,sharedDir={src},mountTag=src" in rt["argv"]
    assert not [h for h in rt.get("helpers") or [] if h.get("kind") == "virtiofsd"]
    machine.kill()


@pytest.mark.capability("vfkit", "publish")
def test_a_published_port_reaches_the_nat_address_through_vmkits_relay(
    fake_vfkit: Any, boot: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay is real; the guest's NAT address is a stand-in echo server on 127.0.0.1
    that the double's bootpd leases to the NIC (vmnet cannot exist here)."""
    import socket
    import threading

    leases = tmp_path / "dhcpd_leases"
    for key, val in (("VMKIT_DHCPD_LEASES", str(leases)), ("VFKIT_DOUBLE_LEASES", str(leases)),
                     ("VFKIT_DOUBLE_LEASE_IP", "127.0.0.1")):  # fmt: skip
        monkeypatch.setenv(key, val)
    guest = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = guest.accept()
        with conn:
            conn.sendall(conn.recv(100))

    threading.Thread(target=echo, daemon=True).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host_port = s.getsockname()[1]
    publish = [f"{host_port}:{guest.getsockname()[1]}"]
    machine = start_vm(boot, networks=[{"mode": "user", "publish": publish}])
    deadline = time.monotonic() + 10
    while machine.status().ip != "127.0.0.1":  # the lease is granted 0.3 s after start
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with socket.create_connection(("127.0.0.1", host_port), timeout=5) as c:
        c.sendall(b"through the relay")
        assert c.recv(100) == b"through the relay"
    rt = machine.runtime().to_json()
    (relay,) = [h for h in rt["helpers"] if h["kind"] == "portfwd"]
    os.kill(rt["pid"], signal.SIGKILL)  # the VMM dies behind vmkit's back
    from vmkit.process import ProcessRef

    relay_proc = ProcessRef(relay["pid"], relay["create_time"])
    assert relay_proc.wait_gone(10), "the relay kept the host port after its VMM died"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as vmkit's check does
        s.bind(("127.0.0.1", host_port))  # free again: nobody listens
        s.listen(1)
    machine.kill()
    guest.close()
