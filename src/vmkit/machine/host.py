"""Host: the VMs of one store (one user, one VMKIT_HOME): create, find, run, restore, gc."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from vmkit import faults
from vmkit.drivers import get_driver, resolve_driver_name
from vmkit.errors import InvalidInput, NotFound, SpecError, VmkitError
from vmkit.machine.facade import Machine
from vmkit.machine.status import Status
from vmkit.model import MachineRecord
from vmkit.store import Store

TYPE_CHECKING = False  # not typing's: `vmkit restore` is timed in milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from vmkit.machine.gc import GcReport
    from vmkit.snapshots import SnapshotStore
    from vmkit.spec import MachineSpec


class Host:
    """The VMs of one store (one user, one VMKIT_HOME)."""

    def __init__(
        self, home: Path | str | None = None, progress: Callable[[str], None] | None = None
    ):
        self.store = Store(Path(home) if home is not None else None)
        self.progress = progress  # told about long work (building the tiny guest)

    def create(self, spec: MachineSpec) -> Machine:
        """Record a new VM. Everything is checked first; on error nothing is left behind.

        With no kernel and no disk to boot, the VM boots the tiny guest (built on first
        use), exactly as `vmkit run` does."""
        from vmkit.guest.default import resolve_tiny_boot
        from vmkit.spec import missing_files

        spec = resolve_tiny_boot(spec, self.progress)
        problems = missing_files(spec, creating=True)
        if problems:
            raise SpecError(problems)
        driver_name = resolve_driver_name(spec.driver, spec.arch)
        driver = get_driver(driver_name, spec.arch)
        owned = any(d.path is None for d in spec.disks) or spec.cloud_init is not None
        if owned:
            from vmkit.storage.prepare import check_owned_files

            check_owned_files(spec, driver)
        driver.check(spec)
        if any(n.publish for n in spec.networks):
            from vmkit.net import portfwd

            portfwd.check(spec, driver)
        spec_json = spec.to_json()
        if not owned:
            return self.register(spec_json, driver_name)
        machine = self.register(spec_json, driver_name, creating=True)
        from vmkit.storage.prepare import make_owned_files

        try:
            with machine.locked():
                faults.point("create:files")
                record = machine.record
                made = make_owned_files(  # fills in record.spec's disk paths
                    record.spec, machine.dir, self.store.home, driver.features.disk_qcow2
                )
                record.disks_made = made.pop("disks_made")
                record.extra = {**record.extra, **made}
                self.store.save_machine(spec.name, record.to_json())
                self.finish_create(machine)
        except BaseException:
            self.store.remove(spec.name)
            raise
        return Machine(self, spec.name)  # its record as finished

    def register(
        self, spec_json: dict[str, Any], driver: str, same_guest: bool = False, **origin: Any
    ) -> Machine:
        """The one place a VM record is made (create, restore, migrate): MACs pinned unique
        in this store (kept as they are for `same_guest`, a migration target), then the
        name claimed atomically. `origin`: restored_from, migrated_from, or creating=True
        while its files are still being made."""
        if not same_guest:
            self.pin_macs(spec_json)
        record = MachineRecord(spec_json, driver, time.time())
        data = {**record.to_json(), **origin}
        self.store.create(str(spec_json["name"]), data)
        return Machine(self, str(spec_json["name"]))

    def finish_create(self, machine: Machine) -> None:
        """Its files are all made: drop the `creating` mark (the caller holds its lock)."""
        data = self.store.load_machine(machine.name)
        if data.pop("creating", None):
            self.store.save_machine(machine.name, data)
        machine.__dict__.pop("record", None)  # read machine.json afresh

    def running_specs(self, driver: str) -> list[dict[str, Any]]:
        """Specs of this store's VMs on `driver` whose VMM process is alive (cheap: no
        control-socket round trips)."""
        out = []
        for machine in self.machines():
            with contextlib.suppress(VmkitError, ValueError, KeyError):
                proc = machine.process()
                if machine.driver_name == driver and proc is not None and proc.alive():
                    out.append(machine.spec_json)
        return out

    def pin_macs(self, spec_json: dict[str, Any]) -> None:
        """Give each NIC without a MAC the stable one for (name, index), unless another VM in
        the store has it: then the next free one. Pinned in the spec, so it never changes."""
        from vmkit.net.mac import unique_mac

        used: set[str] = set()
        for name in self.store.names():
            with contextlib.suppress(NotFound, ValueError, KeyError, AttributeError, TypeError):
                for net in self.store.load_machine(name)["spec"].get("networks", []):
                    if net.get("mac"):
                        used.add(str(net["mac"]).lower())
        for i, net in enumerate(spec_json.get("networks", [])):
            if net.get("mac"):
                mac = str(net["mac"]).lower()
                if mac in used:
                    raise InvalidInput(
                        f"networks[{i}].mac: {mac} is already used by another VM in this store"
                    )
            else:
                net["mac"] = unique_mac(str(spec_json["name"]), i, used)
            used.add(str(net["mac"]))

    def get(self, name: str) -> Machine:
        from vmkit.names import validate_name

        try:
            validate_name(name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return Machine(self, name)

    def machines(self) -> list[Machine]:
        out = []
        for name in self.store.names():
            with contextlib.suppress(NotFound):
                out.append(Machine(self, name))
        return out

    def run(self, spec: MachineSpec, timeout: float | None = None) -> Status:
        """create + start + wait_ready. A VM that never launched (bad input found at start,
        e.g. a published port in use, or a missing binary) is removed again; one that
        launched and failed stays for `inspect`."""
        machine = self.create(spec)
        try:
            machine.start()
        except VmkitError:
            if machine.process() is None:
                with contextlib.suppress(VmkitError):
                    machine.delete()
            raise
        return machine.wait_ready(timeout)

    def restore(
        self,
        snapshot: str,
        name: str | None = None,
        driver: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        memory_restore: str = "copy",
    ) -> Machine:
        """A new VM from a snapshot (own disk clones, fresh MACs); several copies allowed."""
        from vmkit import snapshot_ops

        return snapshot_ops.restore(self, snapshot, name, driver, wait, timeout, memory_restore)

    @property
    def snapshots(self) -> SnapshotStore:
        from vmkit.snapshots import SnapshotStore

        return SnapshotStore(self.store.home)

    def gc(self) -> GcReport:
        """Finish cut-off creates/deletes, record dead VMMs, release what they held."""
        from vmkit.machine.gc import collect

        return collect(self)
