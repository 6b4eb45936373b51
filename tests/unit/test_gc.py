"""`vmkit gc` removes only what it can prove is this store's and dead (issue: it used to
unlink every socket in the runtime dir that did not accept a stream connection)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from vmkit.machine import Host
from vmkit.paths import runtime_dir


@pytest.fixture
def host(vmkit_env: dict[str, str], tmp_path: Path) -> Host:
    return Host(Path(vmkit_env["VMKIT_HOME"]))


def bound(path: Path, kind: int) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(str(path))
    return s


def test_gc_keeps_sockets_it_cannot_prove_are_its_own_and_dead(host: Host, tmp_path: Path):
    run = runtime_dir()
    # a switch port (datagram: never accepts a connection) of a running VM, a socket of
    # another VMKIT_HOME sharing this runtime dir, and a stream socket nobody listens on
    port = bound(run / "aaaa.hn0", socket.SOCK_DGRAM)
    other = bound(run / "bbbb.qmp", socket.SOCK_STREAM)
    other.listen(1)
    silent = bound(run / "cccc.qmp", socket.SOCK_STREAM)  # bound, not listening
    try:
        report = host.gc()
        assert report.removed_sockets == []
        for name in ("aaaa.hn0", "bbbb.qmp", "cccc.qmp"):
            assert (run / name).exists(), name
    finally:
        for s in (port, other, silent):
            s.close()


def test_gc_removes_a_dead_vms_sockets_and_temp_files(host: Host, tmp_path: Path):
    from vmkit.model import RuntimeRecord
    from vmkit.spec import spec_from_dict

    kernel = tmp_path / "k"
    kernel.write_bytes(b"\x7fELFk")  # starts like a kernel (create checks)
    machine = host.create(
        spec_from_dict({"name": "dead", "boot": {"kernel": str(kernel)}, "accelerator": "tcg"})
    )
    sock = runtime_dir() / "dead.qmp"
    s = bound(sock, socket.SOCK_STREAM)
    s.close()
    with machine.locked():  # a VMM that ran (pid 1 with another start time: not ours)
        machine.save_runtime(RuntimeRecord(pid=1, create_time=1.0, sockets={"qmp": str(sock)}))
    (machine.dir / ".runtime.json.abc.tmp").write_text("{")
    report = host.gc()
    assert report.removed_sockets == [str(sock)] and not sock.exists()
    assert report.finalized == ["dead"]
    assert not (machine.dir / ".runtime.json.abc.tmp").exists()
