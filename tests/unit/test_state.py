"""derive_state as a table: every combination of what vmkit can observe -> one state."""

from __future__ import annotations

from typing import Any

import pytest

from vmkit.model import Observation, RuntimeRecord, State, derive_state

ROWS: list[tuple[str, dict[str, Any], State]] = [
    ("never started", {"launched": False, "alive": False}, State.CREATED),
    ("runtime.json unreadable", {"launched": True, "alive": True, "corrupt": True}, State.BROKEN),
    # alive VMM
    ("answers running", {"vmm_state": "running"}, State.RUNNING),
    ("running and ready", {"vmm_state": "running", "ready": True}, State.READY),
    ("paused", {"vmm_state": "paused", "ready": True}, State.PAUSED),
    ("VMM up, no VM yet", {"vmm_state": "starting"}, State.STARTING),
    ("VMM says stopping", {"vmm_state": "stopping"}, State.STOPPING),
    ("silent and young", {"vmm_state": None, "young": True}, State.STARTING),
    ("silent and old", {"vmm_state": None, "young": False}, State.UNRESPONSIVE),
    ("a stop in progress", {"vmm_state": None, "stopping": True}, State.STOPPING),
    ("wait gave up", {"vmm_state": "running", "readiness_failed": True}, State.FAILED),
    (
        "ready after all, later",
        {"vmm_state": "running", "readiness_failed": True, "ready": True},
        State.READY,
    ),
    ("gave up, still booting", {"vmm_state": "starting", "readiness_failed": True}, State.FAILED),
    ("unknown VMM word", {"vmm_state": "suspended-ish"}, State.RUNNING),
    # gone VMM
    ("stopped by vmkit", {"alive": False, "stopped_by_vmkit": True}, State.STOPPED),
    ("guest powered off", {"alive": False, "exit_clean": True}, State.STOPPED),
    ("crashed", {"alive": False, "exit_clean": False}, State.FAILED),
    ("gone, nothing known", {"alive": False, "exit_clean": None}, State.FAILED),
    (
        "killed by vmkit after a crash was seen",
        {"alive": False, "exit_clean": False, "stopped_by_vmkit": True},
        State.STOPPED,
    ),
]


@pytest.mark.parametrize(("why", "seen", "state"), ROWS, ids=[r[0] for r in ROWS])
def test_derive_state(why: str, seen: dict[str, Any], state: State) -> None:
    base: dict[str, Any] = {"launched": True, "alive": True}
    assert derive_state(Observation(**{**base, **seen})) == state, why


def test_a_stale_runtime_file_round_trips_and_keeps_unknown_keys() -> None:
    old = {
        "pid": 42,
        "create_time": 1.5,
        "sockets": {"qmp": "/run/x.qmp"},
        "ready": {"ip": "10.0.2.15", "at": 3.0, "offset": 99},
        "exit": {"clean": False, "status": -9, "reason": "killed"},
        "stop": None,
        "helpers": [{"kind": "tap", "name": "t0", "netns": None, "created": True}],
        "some_future_key": {"x": 1},
    }
    rt = RuntimeRecord.from_json(old)
    assert rt.process is not None and rt.process.pid == 42
    assert rt.ready is not None and rt.ready.offset == 99
    assert rt.exit is not None and not rt.exit.clean
    again = rt.to_json()
    assert again["some_future_key"] == {"x": 1}
    assert again["helpers"] == old["helpers"]
    assert RuntimeRecord.from_json(again) == rt


def test_a_corrupt_runtime_file_is_broken_not_not_running() -> None:
    rt = RuntimeRecord.from_json({"corrupt": True})
    assert rt.corrupt and rt.process is None
