"""MachineView: one VM's records, its lock and its VMM; what every status needs.

`Machine` (facade.py) is a MachineView with the verbs. `vmkit ls` reads its VMs through
views (`views`) so that it loads only the store, the records and, for a VM with a live
VMM, its driver's control; not the rest of Machine (helpers, planning, guest access).
The state still comes from the process and the control socket (status.py), never a file.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from vmkit.errors import NotFound
from vmkit.model import SNAPSHOT_PAUSED, MachineRecord, RuntimeRecord
from vmkit.store import BrokenRecord, LockBusy, Store

TYPE_CHECKING = False  # not typing's: `vmkit ls` loads this module (plain.py)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from vmkit.drivers.base import Control, Driver, LaunchContext
    from vmkit.machine.status import Status
    from vmkit.process import ProcessRef


class MachineView:
    """One VM in the store. Cheap to construct. machine.json is read once per object (it
    does not change after create); runtime.json and the VMM are read on every call."""

    def __init__(self, store: Store, name: str):
        self.store = store
        self.name = name
        if not self.store.exists(name):
            raise NotFound(f"no VM named {name!r} (see `vmkit ls`)")

    @property
    def dir(self) -> Path:
        return self.store.vm_dir(self.name)

    @functools.cached_property
    def record(self) -> MachineRecord:
        data = self.store.load_machine(self.name)  # BrokenRecord (a VmkitError) if damaged
        try:
            return MachineRecord.from_json(data)
        except ValueError as exc:
            raise BrokenRecord(self.name, str(exc)) from None

    @property
    def spec_json(self) -> dict[str, Any]:
        """The stored spec as JSON (no validation: cheap enough for every `vmkit ls`)."""
        return self.record.spec

    @property
    def driver_name(self) -> str:
        return self.record.driver

    @functools.cached_property
    def driver(self) -> Driver:
        from vmkit.drivers import get_driver

        return get_driver(self.driver_name, self.spec_json.get("arch"))

    def check_driver(self) -> None:
        """Raise as `driver` does for a driver vmkit has not (or that cannot run the
        record's arch here), without importing the driver when the answer is plain."""
        from vmkit.drivers import MODULES

        if self.driver_name not in MODULES or self.spec_json.get("arch") not in (None, "auto"):
            self.driver  # noqa: B018 - raises

    @property
    def serial_log(self) -> Path:
        configured = self.spec_json.get("serial_log")
        return Path(configured) if configured else self.dir / "serial.log"

    @property
    def vmm_log(self) -> Path:
        return self.dir / "vmm.log"

    def context(self, accelerator: str) -> LaunchContext:
        """Where the driver must put this VM's files and sockets."""
        from vmkit.drivers.base import LaunchContext
        from vmkit.net import switches

        return LaunchContext(
            vm_dir=self.dir,
            serial_log=self.serial_log,
            events_log=self.dir / "vmm-events.log",
            sockets=self.store.socket_paths(self.name, self.driver.socket_roles),
            accelerator=accelerator,
            switch_sockets={
                name: switches.socket_path(self.store, name)
                for name in switches.names_of(self.spec_json)
            },
        )

    def runtime(self) -> RuntimeRecord:
        return RuntimeRecord.from_json(self.store.load_runtime(self.name))

    def process(self, rt: RuntimeRecord | None = None) -> ProcessRef | None:
        """The VMM process: the recorded one, or for a launch whose pid never reached
        runtime.json, the process whose argv carries the launch tag."""
        rt = self.runtime() if rt is None else rt
        if rt.process is not None:
            return rt.process
        if rt.launching is None and not rt.corrupt:
            return None
        from vmkit.process import find_by_tag

        if rt.launching is not None:
            return find_by_tag(str(rt.launching["tag"]))
        # corrupt: the tag is this VM's first control socket, whatever the file says
        sockets = self.context("tcg").sockets
        return find_by_tag(str(next(iter(sockets.values())))) if sockets else None

    def control(self, rt: RuntimeRecord | None = None) -> Control:
        rt = self.runtime() if rt is None else rt
        return self.driver.bind(rt.socket_paths(), self.dir)

    def save_runtime(self, rt: RuntimeRecord) -> None:
        """Replace runtime.json (the caller holds the VM's lock)."""
        self.store.save_runtime(self.name, rt.to_json())

    @contextlib.contextmanager
    def locked(self, timeout: float = 120.0) -> Iterator[RuntimeRecord]:
        """Hold this VM's lock: every change to its records and its VMM happens under it.
        Gives runtime.json as read on taking the lock (after mending a cut-off stop or
        snapshot), so that the holder need not read it again."""
        with self.store.vm_lock(self.name, timeout):
            rt = self.runtime()
            if rt.stopping:  # its stopper held this lock and is gone: the stop was cut off
                rt.stopping = False
                self.save_runtime(rt)
            if SNAPSHOT_PAUSED in rt.extra:  # likewise a snapshot, with the guest paused
                from vmkit import snapshot_guard

                snapshot_guard.recover(self, rt)  # (it saves the mended rt)
            yield rt

    def status(self) -> Status:
        from vmkit.machine.status import read_status

        rt = self.runtime()
        if SNAPSHOT_PAUSED in rt.extra:  # a snapshot paused the guest:
            with contextlib.suppress(LockBusy), self.locked(0.0):  # resumed if it is gone
                pass
            rt = self.runtime()
        return read_status(self, rt)


def views(store: Store) -> list[MachineView]:
    """Every VM of `store`, by name (one removed meanwhile is left out)."""
    out = []
    for name in store.names():
        try:
            out.append(MachineView(store, name))
        except NotFound:
            continue
    return out
