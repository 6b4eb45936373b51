"""SSH over vfkit's and krunkit's virtio-vsock (`vsock_cid`): the device vmkit adds, read by
vfkit's OWN parser (vfkit_oracle), and the whole path with the vfkit TEST DOUBLE, which
listens on the `connect` socket as vfkit's connectVsock does and plays the guest's port 22.
Contract testing only: nothing here ran on a Mac."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from test_vfkit_argv import ctx_for, spec
from vfkit_grammar import parse_argv
from vfkit_oracle import assert_parses_as_rendered, vfkit_parse

from vmkit.access import transport
from vmkit.drivers.base import LaunchContext
from vmkit.drivers.vfkit import KrunkitDriver, VfkitDriver
from vmkit.errors import InvalidInput, NotSupported
from vmkit.machine import Host
from vmkit.spec import spec_from_dict
from vmkit.storage import sshkeys as keys

NEW = (0, 6, 2)
SOCK = "/tmp/vk/abc.vs22"  # beside ctx_for's REST socket /tmp/vk/abc.rest


@pytest.mark.access_path("vfkit-vsock", "contract")
def test_vsock_cid_adds_a_connect_device_on_port_22_that_vfkit_parses(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    s = spec(files, vsock_cid=3)
    plan = VfkitDriver(arch="aarch64", version=NEW).plan(s, ctx_for(tmp_path))
    assert f"virtio-vsock,port=22,socketURL={SOCK},connect" in plan.argv
    assert plan.sockets["vsock-ssh"] == Path(SOCK)  # removed at stop, found by access
    assert next(iter(plan.sockets)) == "rest"  # the launch tag stays the REST socket
    result = vfkit_parse({"a": plan.argv})["a"]
    assert_parses_as_rendered(result, plan.argv)
    (vsock,) = [p for p in result["parsed"] if p.get("value", "").startswith("virtio-vsock")]
    assert vsock["struct"] == f'{{"port":22,"socketURL":"{SOCK}"}}'  # Listen: false (omitted)
    plain = vfkit_parse({"b": ["vfkit", "--device", f"virtio-vsock,port=22,socketURL={SOCK}"]})
    assert '"listen":true' in plain["b"]["parsed"][0]["struct"]  # vfkit's default: listen


def test_without_vsock_cid_there_is_no_vsock_device(tmp_path: Path, files: dict[str, Path]):
    plan = VfkitDriver(arch="aarch64", version=NEW).plan(spec(files), ctx_for(tmp_path))
    assert not any(a.startswith("virtio-vsock") for a in plan.argv)
    assert "vsock-ssh" not in plan.sockets


@pytest.mark.access_path("krunkit-vsock", "contract")
def test_krunkit_takes_the_same_device_from_1_2(tmp_path: Path, files: dict[str, Path]) -> None:
    s = spec(files, boot={"kind": "efi"}, disks=[{"path": str(files["disk"])}], vsock_cid=3)
    argv = KrunkitDriver(arch="aarch64", version=(1, 2, 0)).plan(s, ctx_for(tmp_path)).argv
    dev = next(d for d in parse_argv(argv, "krunkit").devices if d.kind == "virtio-vsock")
    assert dev.options == [("port", "22"), ("socketURL", SOCK), ("connect", None)]
    with pytest.raises(NotSupported, match=r"krunkit 1\.1\.1 does not know virtio-vsock connect"):
        KrunkitDriver(arch="aarch64", version=(1, 1, 1)).plan(s, ctx_for(tmp_path))


@pytest.mark.parametrize(
    ("over", "error", "match"),
    [
        ({"vsock_cid": 5}, InvalidInput, r"vsock_cid: vfkit gives the guest CID 3 itself"),
        (
            {"vsock_cid": 3, "boot": {"kind": "macos", "machine_identifier": "/m",
                                      "hardware_model": "/h", "aux_image": "/a"},
             "disks": [{"path": "/d.img"}]},
            NotSupported, r"vsock_cid: a macOS guest has no SSH server on vsock",
        ),
    ],
)  # fmt: skip
def test_a_cid_vfkit_cannot_give_or_a_macos_guest_is_refused(
    tmp_path: Path, files: dict[str, Path], over: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        VfkitDriver(arch="aarch64", version=NEW).plan(spec(files, **over), ctx_for(tmp_path))


@pytest.mark.parametrize(
    ("rest", "match"),
    [
        ("/tmp/a b/x.rest", r"characters vfkit would URL-escape \(' '\)"),
        ("/tmp/" + "d" * 92 + "/x.rest", r"is 10\d bytes; macOS allows at most 103"),
    ],
)
def test_a_vsock_socket_path_vfkit_would_move_or_macos_cannot_bind_is_refused(
    tmp_path: Path, files: dict[str, Path], rest: str, match: str
) -> None:
    ctx = ctx_for(tmp_path)
    ctx = LaunchContext(ctx.vm_dir, ctx.serial_log, ctx.events_log, {"rest": Path(rest)}, "hvf")
    with pytest.raises(InvalidInput, match=match):
        VfkitDriver(arch="aarch64", version=NEW).plan(spec(files, vsock_cid=3), ctx)


# ---- the whole path with the double --------------------------------------------------------


class BannerServer:
    """A TCP server standing in for the guest's sshd behind vsock port 22: it speaks first,
    then echoes what it gets."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-guest-behind-vsock\r\n")
                while data := conn.recv(4096):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)


def start_vm(tmp_path: Path, flavor: str, boot: dict[str, Any]) -> Any:
    """A VM with vsock_cid on the double in `flavor` (krunkit boots EFI from a disk)."""
    data: dict[str, Any] = {"name": "vs", "driver": flavor, "boot": boot, "vsock_cid": 3}
    if flavor == "krunkit":
        disk = tmp_path / "root.raw"
        disk.write_bytes(b"\0" * 4096)
        data.update(boot={"kind": "efi"}, disks=[{"path": str(disk)}])
    machine = Host().create(spec_from_dict(data))
    machine.start()
    assert machine.wait_ready(20).state == "ready"
    return machine


@pytest.mark.parametrize(
    "flavor",
    [
        pytest.param(f, marks=[pytest.mark.capability(f, "guest_exec", "guest_copy"),
                               pytest.mark.access_path(f"{f}-vsock", "contract")])
        for f in ("vfkit", "krunkit")
    ],
)  # fmt: skip
def test_the_ssh_proxy_reaches_the_guest_port_through_the_vmms_socket(
    fake_vfkit: Any,
    boot: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    cli: Any,
    tmp_path: Path,
    flavor: str,
) -> None:
    guest = BannerServer()
    monkeypatch.setenv("VFKIT_DOUBLE_VSOCK_GUEST", f"127.0.0.1:{guest.port}")
    monkeypatch.setenv("VFKIT_DOUBLE_VERSION", "1.2.0" if flavor == "krunkit" else "0.6.2")
    machine = start_vm(tmp_path, flavor, boot)
    sock = machine.runtime().sockets["vsock-ssh"]
    assert Path(sock).is_socket()
    target = transport.select_target(machine, machine.status())
    assert target.kind == "vsock" and target.proxy is not None
    assert target.proxy[-2:] == ["unix", sock]
    proc = subprocess.run(target.proxy, input=b"ping", capture_output=True, timeout=30)
    assert proc.stdout == b"SSH-2.0-guest-behind-vsock\r\nping", proc.stderr
    machine.stop(timeout=10)
    assert not Path(sock).exists()  # the VM's sockets go with it


def test_a_guest_not_serving_vsock_22_gets_a_message_naming_vsock(
    fake_vfkit: Any, boot: dict[str, Any], cli: Any, tmp_path: Path
) -> None:
    machine = start_vm(tmp_path, "vfkit", boot)
    keys.host_key(machine.dir, machine.name)  # what cloud-init's seed would hand the guest
    cli.env["VMKIT_SSH_WAIT"] = "0.5"
    proc = cli("exec", "vs", "--", "true")
    assert proc.returncode == 255, proc.stderr
    assert "no SSH server answered over vsock" in proc.stderr
    assert "systemd >= 256" in proc.stderr and "Traceback" not in proc.stderr
    machine.kill()
