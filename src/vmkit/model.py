"""The records vmkit keeps about a VM, typed, and the pure rule that turns facts into a state.

`machine.json` is a `MachineRecord` (the spec and how the VM was made); `runtime.json` is a
`RuntimeRecord` (the VMM process, its sockets and sidecars, readiness, how it ended). Both
round-trip through the JSON layout vmkit has always written, so old stores read as before.
`derive_state` decides a VM's state from an `Observation` of reality; it reads and writes
nothing, so it is tested as a table.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

from vmkit.plain import Frozen, Plain
from vmkit.process import ProcessRef

TYPE_CHECKING = False  # not typing's: `vmkit ls` does not import typing (plain.py)
if TYPE_CHECKING:
    from typing import Any

CONTROL_WAIT = 30.0  # seconds a new VMM's control socket may stay silent ("starting")
# runtime.json's marker while a snapshot has the guest paused (snapshot_guard)
SNAPSHOT_PAUSED = "paused_by_snapshot"


class State(enum.StrEnum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    READY = "ready"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    UNRESPONSIVE = "unresponsive"
    BROKEN = "broken"  # vmkit's own record of the VM cannot be read


ALIVE_STATES = frozenset(
    {
        State.STARTING,
        State.RUNNING,
        State.READY,
        State.PAUSED,
        State.STOPPING,
        State.UNRESPONSIVE,
    }
)
LIVE_STATES = (State.RUNNING, State.READY, State.PAUSED)


class Ready(Frozen):
    _fields = ("ip", "at", "offset", "inherited_from")
    __slots__ = _fields

    def __init__(
        self,
        ip: str | None,
        at: float,
        offset: int = 0,  # serial.log offset just past the readiness line
        inherited_from: str | None = None,  # a restored copy that kept its snapshot's readiness
    ):
        self.ip, self.at, self.offset, self.inherited_from = ip, at, offset, inherited_from

    def to_json(self) -> dict[str, Any]:
        out = self.as_dict()
        if self.inherited_from is None:
            del out["inherited_from"]
        return out


class ExitInfo(Frozen):
    _fields = ("clean", "status", "reason")
    __slots__ = _fields

    def __init__(self, clean: bool, status: int | None, reason: str):
        self.clean, self.status, self.reason = clean, status, reason


class StopInfo(Frozen):
    _fields = ("requested", "step", "at")
    __slots__ = _fields

    def __init__(
        self,
        requested: str,  # the verb: stop | kill | migrate
        step: str,  # what ended it: acpi | vm.shutdown | sigterm | sigkill | migrated to X
        at: float,
    ):
        self.requested, self.step, self.at = requested, step, at


class ReadinessFailure(Frozen):
    _fields = ("reason", "hint")
    __slots__ = _fields

    def __init__(self, reason: str, hint: str | None = None):
        self.reason, self.hint = reason, hint


class SidecarRecord(Frozen):
    """A helper process or resource a VM holds: virtiofsd, port relay, TAP, switch."""

    _fields = ("kind", "pid", "create_time", "name", "netns", "created", "extra")
    __slots__ = _fields

    def __init__(
        self,
        kind: str,
        pid: int | None = None,
        create_time: float | None = None,
        name: str | None = None,  # the TAP's or switch's name
        netns: str | None = None,
        created: bool = False,  # a TAP vmkit made (deleted with the VM)
        extra: dict[str, Any] | None = None,
    ):
        self.kind, self.pid, self.create_time, self.name = kind, pid, create_time, name
        self.netns, self.created, self.extra = netns, created, {} if extra is None else extra

    @property
    def process(self) -> ProcessRef | None:
        if self.pid is None or self.create_time is None:
            return None
        return ProcessRef(self.pid, self.create_time)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SidecarRecord:
        known = set(cls._fields) - {"extra"}
        return cls(
            **{k: v for k, v in data.items() if k in known},
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in self._fields:
            value = getattr(self, f)
            if f not in ("kind", "extra") and value not in (None, False):
                out[f] = value
        if self.kind == "tap":
            out.setdefault("created", False)
            out.setdefault("netns", None)
        return {**out, **self.extra}


# runtime.json keys with a typed field of their own; others are kept as they are.
_TYPED = {
    "pid",
    "create_time",
    "sockets",
    "helpers",
    "ready",
    "exit",
    "stop",
    "readiness_failure",
}


class RuntimeRecord(Plain):
    """runtime.json: what vmkit launched and what it learnt since."""

    _fields = (
        "pid",
        "create_time",
        "driver",
        "accelerator",
        "argv",
        "sockets",
        "started_at",
        "serial_offset",
        "ready",
        "stopping",
        "stop",
        "exit",
        "readiness_failure",
        "helpers",
        "hotplug",
        "ports",
        "launching",
        "gc_done",
        "restored_from",
        "migrated_from",
        "corrupt",
        "extra",
    )
    __slots__ = _fields

    def __init__(
        self,
        pid: int | None = None,
        create_time: float = 0.0,
        driver: str | None = None,
        accelerator: str | None = None,
        argv: list[str] | None = None,
        sockets: dict[str, str] | None = None,
        started_at: float | None = None,
        serial_offset: int = 0,
        ready: Ready | None = None,
        stopping: bool = False,
        stop: StopInfo | None = None,
        exit: ExitInfo | None = None,
        readiness_failure: ReadinessFailure | None = None,
        helpers: list[SidecarRecord] | None = None,
        hotplug: dict[str, dict[str, Any]] | None = None,
        ports: list[dict[str, Any]] | None = None,
        # Written before the VMM is spawned: its argv carries `tag` (its own control socket's
        # path), so a VMM whose pid never reached this file is still found from the VM dir.
        launching: dict[str, Any] | None = None,
        gc_done: bool = False,
        restored_from: str | None = None,
        migrated_from: str | None = None,
        corrupt: str | None = None,  # why runtime.json could not be read
        extra: dict[str, Any] | None = None,
    ):
        self.pid, self.create_time, self.driver, self.accelerator = (
            pid,
            create_time,
            driver,
            accelerator,
        )
        self.argv = [] if argv is None else argv
        self.sockets = {} if sockets is None else sockets
        self.started_at, self.serial_offset, self.ready = started_at, serial_offset, ready
        self.stopping, self.stop, self.exit = stopping, stop, exit
        self.readiness_failure = readiness_failure
        self.helpers = [] if helpers is None else helpers
        self.hotplug = {} if hotplug is None else hotplug
        self.ports = [] if ports is None else ports
        self.launching, self.gc_done = launching, gc_done
        self.restored_from, self.migrated_from = restored_from, migrated_from
        self.corrupt = corrupt
        self.extra = {} if extra is None else extra

    @property
    def process(self) -> ProcessRef | None:
        return None if self.pid is None else ProcessRef(self.pid, self.create_time)

    def socket_paths(self) -> dict[str, Path]:
        return {k: Path(v) for k, v in self.sockets.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuntimeRecord:
        if data.get("corrupt"):
            reason = data["corrupt"]
            return cls(corrupt=reason if isinstance(reason, str) else "not valid JSON")
        simple = set(cls._fields) - _TYPED - {"extra"}
        rec = cls(
            **{k: data[k] for k in simple if k in data and data[k] is not None},
            extra={k: v for k, v in data.items() if k not in simple and k not in _TYPED},
        )
        if data.get("pid") is not None:
            rec.pid = int(data["pid"])
            rec.create_time = float(data.get("create_time") or 0.0)
        rec.sockets = {k: str(v) for k, v in (data.get("sockets") or {}).items()}
        rec.helpers = [SidecarRecord.from_json(h) for h in data.get("helpers") or []]
        if (r := data.get("ready")) is not None:
            rec.ready = Ready(r.get("ip"), float(r.get("at", 0)), int(r.get("offset", 0)))
            if r.get("inherited_from"):
                rec.ready = Ready(rec.ready.ip, rec.ready.at, 0, str(r["inherited_from"]))
        if (e := data.get("exit")) is not None:
            rec.exit = ExitInfo(bool(e["clean"]), e.get("status"), str(e["reason"]))
        if (s := data.get("stop")) is not None:
            rec.stop = StopInfo(str(s["requested"]), str(s["step"]), float(s.get("at", 0)))
        if (f := data.get("readiness_failure")) is not None:
            rec.readiness_failure = ReadinessFailure(str(f["reason"]), f.get("hint"))
        return rec

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in self._fields:
            if f in ("extra", "pid", "create_time", "corrupt"):
                continue
            value = getattr(self, f)
            if f in ("launching", "restored_from", "migrated_from") and value is None:
                continue
            if f == "gc_done" and not value:
                continue
            out[f] = value
        if self.pid is not None:
            out["pid"], out["create_time"] = self.pid, self.create_time
        out["helpers"] = [h.to_json() for h in self.helpers]
        for key in ("ready",):
            out[key] = None if self.ready is None else self.ready.to_json()
        for key in ("exit", "stop", "readiness_failure"):
            value = getattr(self, key)
            out[key] = None if value is None else value.as_dict()
        return out


def spec_digest(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    from vmkit.sha import sha256

    digest: str = sha256(canonical.encode()).hexdigest()
    return digest


class MachineRecord(Plain):
    """machine.json: the validated spec (as JSON) and how the VM came to be."""

    _fields = (
        "spec",
        "driver",
        "created_at",
        "format",
        "restored_from",
        "migrated_from",
        "disks_made",
        "extra",
    )
    __slots__ = _fields

    def __init__(
        self,
        spec: dict[str, Any],
        driver: str,
        created_at: float,
        format: int = 1,
        restored_from: str | None = None,
        migrated_from: str | None = None,
        disks_made: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        self.spec, self.driver, self.created_at, self.format = spec, driver, created_at, format
        self.restored_from, self.migrated_from = restored_from, migrated_from
        self.disks_made = [] if disks_made is None else disks_made
        self.extra = {} if extra is None else extra

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def spec_intact(self) -> bool:
        """The spec is byte-for-byte what vmkit validated and wrote (no hand edit, no damage)."""
        return self.extra.get("spec_sha256") == spec_digest(self.spec)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineRecord:
        """Raises ValueError (naming what is wrong) for a record that is not one."""
        if not isinstance(data, dict):
            raise ValueError("machine.json is not a JSON object")
        spec, driver = data.get("spec"), data.get("driver")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ValueError("machine.json has no valid spec")
        if not isinstance(driver, str):
            raise ValueError("machine.json names no driver")
        known = set(cls._fields) - {"extra"}
        try:
            return cls(
                **{k: v for k, v in data.items() if k in known and v is not None},
                extra={k: v for k, v in data.items() if k not in known},
            )
        except TypeError as exc:
            raise ValueError(f"machine.json: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """Records are written only from validated specs, so the digest written with them
        vouches for the spec: `spec_intact` then spares every status a validation."""
        out: dict[str, Any] = {**self.extra}
        out.update(spec=self.spec, driver=self.driver, created_at=self.created_at)
        out["spec_sha256"] = spec_digest(self.spec)
        out["format"] = self.format
        for key in ("restored_from", "migrated_from"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.disks_made:
            out["disks_made"] = self.disks_made
        return out


class Observation(Frozen):
    """What vmkit saw of one VM just now; `derive_state` needs nothing else."""

    _fields = (
        "launched",
        "alive",
        "vmm_state",
        "young",
        "ready",
        "stopping",
        "readiness_failed",
        "stopped_by_vmkit",
        "exit_clean",
        "corrupt",
    )
    __slots__ = _fields

    def __init__(
        self,
        launched: bool,  # runtime.json records a VMM (or a launch in flight)
        alive: bool,  # that VMM process exists (pid + start time)
        vmm_state: str | None = None,  # its control socket's answer; None: no answer
        young: bool = False,  # launched less than CONTROL_WAIT ago
        ready: bool = False,  # the readiness line (or probe) was seen
        stopping: bool = False,  # a `vmkit stop` is in progress
        readiness_failed: bool = False,  # `vmkit wait` gave up
        stopped_by_vmkit: bool = False,  # stop/kill/migrate ended it
        exit_clean: bool | None = None,  # for a gone VMM: did its logs show a clean exit
        corrupt: bool = False,  # runtime.json cannot be read
    ):
        self.launched, self.alive, self.vmm_state, self.young = launched, alive, vmm_state, young
        self.ready, self.stopping, self.readiness_failed = ready, stopping, readiness_failed
        self.stopped_by_vmkit, self.exit_clean, self.corrupt = stopped_by_vmkit, exit_clean, corrupt


def derive_state(o: Observation) -> State:
    """The state of a VM from what was observed. Pure: reads and writes nothing."""
    if o.corrupt:
        return State.BROKEN
    if not o.launched:
        return State.CREATED
    if not o.alive:
        if o.stopped_by_vmkit or o.exit_clean:
            return State.STOPPED
        return State.FAILED
    if o.stopping:
        return State.STOPPING
    if o.vmm_state is None:
        if o.young:
            return State.FAILED if o.readiness_failed else State.STARTING
        return State.UNRESPONSIVE
    if o.vmm_state == "running":
        if o.ready:
            return State.READY
        return State.FAILED if o.readiness_failed else State.RUNNING
    if o.vmm_state == "starting" and o.readiness_failed and not o.ready:
        return State.FAILED
    try:
        return State(o.vmm_state)
    except ValueError:
        return State.RUNNING
