"""The record classes `vmkit ls` reads are plain `__slots__` classes (plain.py), not
dataclasses: they keep what the dataclasses gave (value equality, repr, frozen ones
hashable, mutable ones not, JSON layout) and refuse fields they do not have."""

from __future__ import annotations

import pytest

from vmkit.machine.status import Status
from vmkit.model import (
    ExitInfo,
    MachineRecord,
    Ready,
    RuntimeRecord,
    SidecarRecord,
    State,
    StopInfo,
)
from vmkit.process import ProcessRef


def test_value_equality_repr_and_hashing() -> None:
    assert Ready("10.0.0.2", 1.0) == Ready("10.0.0.2", 1.0, 0, None)
    assert Ready("10.0.0.2", 1.0) != Ready("10.0.0.3", 1.0)
    assert Ready("10.0.0.2", 1.0) != ("10.0.0.2", 1.0, 0, None)  # another type
    assert len({ProcessRef(7, 1.5), ProcessRef(7, 1.5), ProcessRef(8, 1.5)}) == 2  # frozen
    assert repr(StopInfo("stop", "acpi", 2.0)) == "StopInfo(requested='stop', step='acpi', at=2.0)"
    with pytest.raises(TypeError):
        hash(RuntimeRecord())  # mutable: unhashable, as a non-frozen dataclass
    with pytest.raises(TypeError):
        hash(SidecarRecord("tap", extra={"a": 1}))  # holds a dict
    with pytest.raises(AttributeError):
        ExitInfo(True, 0, "x").typo = 1  # type: ignore[attr-defined]  # __slots__
    with pytest.raises(AttributeError, match="frozen"):
        Ready(None, 1.0).ip = "10.0.0.9"  # as a frozen dataclass
    rt = RuntimeRecord()
    rt.pid = 3  # a mutable record stays mutable


def test_defaults_are_not_shared_between_records() -> None:
    a, b = RuntimeRecord(), RuntimeRecord()
    a.argv.append("qemu")
    a.extra["k"] = 1
    assert b.argv == [] and b.extra == {}
    assert MachineRecord({"name": "v"}, "qemu", 1.0).disks_made is not (
        MachineRecord({"name": "v"}, "qemu", 1.0).disks_made
    )


def test_runtime_json_round_trips_with_every_typed_part() -> None:
    data = {
        "pid": 42,
        "create_time": 5.5,
        "driver": "qemu",
        "sockets": {"qmp": "/run/x.qmp"},
        "ready": {"ip": "10.0.2.15", "at": 3.0, "offset": 10},
        "exit": {"clean": False, "status": -9, "reason": "killed"},
        "stop": {"requested": "kill", "step": "sigkill", "at": 4.0},
        "readiness_failure": {"reason": "late", "hint": None},
        "helpers": [{"kind": "tap", "name": "tap0", "created": True, "netns": None}],
        "an_old_key": [1, 2],
    }
    rt = RuntimeRecord.from_json(data)
    assert rt.ready == Ready("10.0.2.15", 3.0, 10) and rt.process == ProcessRef(42, 5.5)
    assert rt.exit == ExitInfo(False, -9, "killed")
    out = rt.to_json()
    assert out["stop"] == data["stop"] and out["readiness_failure"] == data["readiness_failure"]
    assert out["helpers"] == data["helpers"] and out["an_old_key"] == [1, 2]
    assert RuntimeRecord.from_json(out) == rt


def test_a_record_missing_a_field_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="created_at"):
        MachineRecord.from_json({"spec": {"name": "v"}, "driver": "qemu"})


def test_status_json_copies_its_lists_and_names_its_state() -> None:
    st = Status("v", State.FAILED, "qemu", pid=3, vmm_log_tail=["a"])
    out = st.to_json()
    assert list(out) == [
        "name", "state", "driver", "pid", "ip", "accelerator", "started_at", "ready_at",
        "reason", "hint", "vmm_log_tail", "serial_log_tail",
    ]  # fmt: skip
    assert out["state"] == "failed" and type(out["state"]) is str
    out["vmm_log_tail"].append("b")
    assert st.vmm_log_tail == ["a"] and st.alive
