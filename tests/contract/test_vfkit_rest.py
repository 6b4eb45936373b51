"""The vfkit REST client (httpx over a Unix socket) and the driver's control methods against
the scripted vfkit double (tests/contract/vfkit_double.py). Contract testing only."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from vfkit_double import DoubleServer

from vmkit.drivers.vfkit import KrunkitDriver, VfkitDriver
from vmkit.drivers.vfkit_api import VM_STATES, VfkitAPI, VfkitAPIError, VfkitUnreachable


@pytest.fixture
def sock() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vkr", dir="/tmp") as d:
        yield Path(d) / "rest.sock"


def test_state_maps_every_vz_state() -> None:
    assert set(VM_STATES) == {
        "VirtualMachineState" + s
        for s in (
            "Running",
            "Stopped",
            "Paused",
            "Error",
            "Starting",
            "Pausing",
            "Resuming",
            "Stopping",
            "Saving",
            "Restoring",
        )
    }


def test_get_state_and_its_vmkit_meaning(sock: Path) -> None:
    with DoubleServer(sock):
        api = VfkitAPI(str(sock))
        raw = api.state()
        assert raw["state"] == "VirtualMachineStateRunning"
        assert raw["canPause"] is True and raw["canResume"] is False
        assert api.vmkit_state() == "running"


@pytest.mark.capability("vfkit", "pause")
def test_pause_and_resume_post_202_and_change_state(sock: Path) -> None:
    with DoubleServer(sock) as double:
        driver = VfkitDriver()
        sockets = {"rest": str(sock)}
        driver.bind(sockets, Path(".")).pause()
        assert driver.bind(sockets, Path(".")).state() == "paused"
        driver.bind(sockets, Path(".")).resume()
        assert driver.bind(sockets, Path(".")).state() == "running"
        assert double.vm.requests == ["Pause", "Resume"]


def test_a_refused_transition_is_an_error_with_vfkits_message(sock: Path) -> None:
    with (
        DoubleServer(sock),
        pytest.raises(VfkitAPIError, match=r"vfkit refused Resume \(HTTP 500: .*transition"),
    ):
        VfkitAPI(str(sock)).set_state("Resume")


def test_unknown_state_requests_are_not_sent(sock: Path) -> None:
    with DoubleServer(sock) as double, pytest.raises(ValueError, match=r"unknown vfkit state"):
        VfkitAPI(str(sock)).set_state("Reboot")
    assert double.vm.requests == []


def test_stop_then_hardstop(sock: Path) -> None:
    with DoubleServer(sock, {"ignore-stop"}) as double:
        driver = VfkitDriver()
        sockets = {"rest": str(sock)}
        driver.bind(sockets, Path(".")).power_button()
        assert driver.bind(sockets, Path(".")).state() == "running"  # the guest ignored it
        assert driver.bind(sockets, Path(".")).hard_stop() == "HardStop"
        assert driver.bind(sockets, Path(".")).state() == "stopping"  # Stopped, process still there
        assert double.vm.requests == ["Stop", "HardStop"]


def test_inspect_extra_has_state_and_inspect(sock: Path) -> None:
    config = {"vcpus": 2, "memoryBytes": 1 << 30, "devices": [{"kind": "virtio-rng"}]}
    with DoubleServer(sock, config=config):
        extra = VfkitDriver().bind({"rest": str(sock)}, Path(".")).inspect_extra()
    assert extra["inspect"] == config
    assert extra["state"]["state"] == "VirtualMachineStateRunning"


def test_no_socket_means_unreachable_and_no_state(sock: Path) -> None:
    with pytest.raises(VfkitUnreachable, match=r"does not answer.*exited"):
        VfkitAPI(str(sock)).state()
    assert VfkitDriver().bind({"rest": str(sock)}, Path(".")).state() is None
    assert (
        "does not answer"
        in VfkitDriver().bind({"rest": str(sock)}, Path(".")).inspect_extra()["error"]
    )


def test_a_refused_connection_is_unreachable(sock: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))  # bound, never listening: connect() is refused
    try:
        with pytest.raises(VfkitUnreachable):
            VfkitAPI(str(sock), timeout=0.5).state()
    finally:
        s.close()


def test_a_silent_server_times_out_with_a_clear_error(sock: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.listen(1)  # accepts into the backlog, never answers
    try:
        with pytest.raises(VfkitAPIError, match=r"did not answer within 0\.3s"):
            VfkitAPI(str(sock), timeout=0.3).state()
    finally:
        s.close()


def test_krunkit_has_no_hardstop_pause_or_inspect(sock: Path) -> None:
    with DoubleServer(sock, flavor="krunkit") as double:
        driver = KrunkitDriver()
        sockets = {"rest": str(sock)}
        assert driver.bind(sockets, Path(".")).state() == "running"
        assert driver.bind(sockets, Path(".")).hard_stop() is None
        from vmkit.drivers.abilities import Pausable

        assert not isinstance(driver.bind(sockets, Path(".")), Pausable)
        assert not driver.capabilities.pause
        assert "inspect" not in driver.bind(sockets, Path(".")).inspect_extra()
        driver.bind(sockets, Path(".")).power_button()
        assert double.vm.requests == ["Stop"]


def _drop_after_headers(sock: Path) -> tuple[socket.socket, list[bytes]]:
    """A server that reads the request head, then closes without answering (krunkit's
    read-once server when the body comes in a second write)."""
    import threading

    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(sock))
    srv.listen(4)
    seen: list[bytes] = []

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            seen.append(data)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, seen


def test_krunkit_stop_counts_as_sent_when_krunkit_closes_after_the_post(sock: Path) -> None:
    srv, seen = _drop_after_headers(sock)
    try:
        KrunkitDriver().bind(
            {"rest": str(sock)}, Path(".")
        ).power_button()  # no error: krunkit saw POST
        with pytest.raises(VfkitAPIError, match="closed the connection"):
            VfkitDriver().bind(
                {"rest": str(sock)}, Path(".")
            ).power_button()  # vfkit must answer 202
    finally:
        srv.close()
    assert all(s.startswith(b"POST /vm/state HTTP/1.1") for s in seen)
