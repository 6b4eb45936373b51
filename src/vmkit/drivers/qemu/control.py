"""The running VMM's Control for the qemu driver (see driver.py)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from vmkit.drivers.base import (
    Control,
    RestorePlan,
)
from vmkit.drivers.qemu.driver import (
    _MIGRATING,
    ANNOUNCE_TIMEOUT,
    HOTPLUG_PORTS,
    HOTPLUG_PREFIX,
    MIGRATION_POLL,
    RUN_STATES,
    SAVE_TIMEOUT,
    STATE_FILE,
    UNPLUG_TIMEOUT,
)
from vmkit.drivers.qemu.migration import await_migration
from vmkit.drivers.qmp import QMP, QMPError
from vmkit.errors import NotSupported, VmkitError

TYPE_CHECKING = False  # not typing's: a running VM's `vmkit ls` binds this (plain.py)
if TYPE_CHECKING:
    from typing import Any

    from vmkit.spec import Disk, Network


class QemuControl(Control):
    def state(self, timeout: float = 2.0) -> str | None:
        try:
            with QMP(self.sockets["qmp"], timeout=timeout) as q:
                status = q.execute("query-status")
        except (QMPError, OSError):
            return None
        return RUN_STATES.get(str(status.get("status")), "running")

    def power_button(self) -> None:
        with QMP(self.sockets["qmp"]) as q:
            q.execute("system_powerdown")

    def pause(self) -> None:
        with QMP(self.sockets["qmp"]) as q:
            q.execute("stop")

    def resume(self) -> None:
        """`cont`; a save still in flight (a snapshot cut off by SIGKILL) is cancelled
        first, else its end would stop the guest again."""
        with QMP(self.sockets["qmp"]) as q:
            if q.execute("query-migrate").get("status") in _MIGRATING:
                q.execute("migrate_cancel")
                deadline = time.monotonic() + UNPLUG_TIMEOUT
                while q.execute("query-migrate").get("status") in (*_MIGRATING, "cancelling"):
                    if time.monotonic() > deadline:
                        raise VmkitError("QEMU did not cancel the cut-off snapshot save")
                    time.sleep(MIGRATION_POLL)
            q.execute("cont")

    def reboot(self) -> None:
        with QMP(self.sockets["qmp"]) as q:
            q.execute("system_reset")

    def save_state(self, state_dir: Path) -> dict[str, Any]:
        """RAM + device state through `migrate` to a file fd (QEMU sends zero pages as
        flags, so the file holds about the RAM the guest touched, not its size)."""
        path = state_dir / STATE_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with QMP(self.sockets["qmp"], timeout=10.0) as q:
                q.execute("getfd", {"fdname": "vmkit-save"}, fd=fd)
                os.close(fd)
                fd = -1
                _events_on(q)
                q.execute("migrate", {"uri": "fd:vmkit-save"})
                try:
                    await_migration(q, "saving the snapshot", SAVE_TIMEOUT)
                except BaseException:  # e.g. SIGTERM: stop writing before the guest resumes
                    with contextlib.suppress(QMPError, OSError):
                        q.execute("migrate_cancel")
                    raise
                # QEMU says `completed` a moment before it leaves `finish-migrate` (no event
                # marks that); `cont` is refused until then.
                deadline = time.monotonic() + SAVE_TIMEOUT
                while q.execute("query-status").get("status") == "finish-migrate":
                    if time.monotonic() > deadline:
                        raise VmkitError("QEMU did not finish the snapshot save")
                    time.sleep(0.001)
                # The source is left in `postmigrate` with its disks inactive: the next save
                # would fail. `cont` reactivates them; `stop` pauses again at once (the
                # guest runs for one QMP round trip; a running guest is resumed right after).
                q.execute("cont")
                q.execute("stop")
                version = q.execute("query-version")
        finally:
            if fd >= 0:
                os.close(fd)
        q_ver = version.get("qemu", {}) if isinstance(version, dict) else {}
        return {
            "state_file": STATE_FILE,
            "state_bytes": path.stat().st_size,
            "stream": "qemu-migration",
            "qemu_version": f"{q_ver.get('major')}.{q_ver.get('minor')}.{q_ver.get('micro')}",
        }

    def complete_restore(self, plan: RestorePlan, timeout: float) -> None:
        """Load the state file (`-incoming defer` + an fd), waiting on QMP's MIGRATION
        event rather than polling; QEMU resumes the guest itself once loaded. A snapshot
        whose RAM lives in a shared file (shared_ram.py) loads with `x-ignore-shared`."""
        state_file = plan.state_dir / str(plan.meta["state_file"])
        fd = os.open(state_file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with QMP(self.sockets["qmp"], timeout=10.0) as q:
                caps = [{"capability": "events", "state": True}]
                if plan.meta.get("shared_ram"):
                    caps.append({"capability": "x-ignore-shared", "state": True})
                q.execute("migrate-set-capabilities", {"capabilities": caps})
                q.execute("getfd", {"fdname": "vmkit-restore"}, fd=fd)
                os.close(fd)
                fd = -1
                q.execute("migrate-incoming", {"uri": "fd:vmkit-restore"})
                await_migration(q, "loading the snapshot", timeout)
                if q.execute("query-status").get("status") != "running":
                    q.execute("cont")
        finally:
            if fd >= 0:
                os.close(fd)

    def announce_readiness(self, networks: list[Network], own_agent: bool = False) -> str | None:
        """Tell the guest agent on the control port it was restored (its NICs' new MACs;
        on a private NAT vmkit's own agent keeps its address: guestctl.restored_request);
        returns the address in its answer ("ok <ip>|-") once it has taken them, or None
        without a valid answer. The agent prints its readiness line too (an older one
        before it answers, a newer one after)."""
        from vmkit.drivers.qemu import guestctl

        notes, line = guestctl.restored_request(networks, own_agent)
        try:
            answer = guestctl.request(self._ctl(), line, ANNOUNCE_TIMEOUT, notes=notes)
        except VmkitError:  # readiness is then waited for as usual
            return None
        return guestctl.answered_address(answer)

    def ping(self, timeout: float = ANNOUNCE_TIMEOUT) -> str:
        """The guest agent's answer to `ping` ("ok <ip>|-")."""
        from vmkit.drivers.qemu import guestctl

        return guestctl.request(self._ctl(), "ping", timeout)

    def _ctl(self) -> str:
        """The control port's FIFO prefix (PATH of PATH.in / PATH.out)."""
        fifo = self.sockets.get("ctl.in")
        if fifo is None:
            raise VmkitError("the VM has no control port FIFOs (started by an older vmkit)")
        return str(fifo).removesuffix(".in")

    def _free_port(self, q: QMP) -> str:
        ports: dict[str, bool] = {}
        for bus in q.execute("query-pci"):
            for dev in bus.get("devices", []):
                qid = str(dev.get("qdev_id", ""))
                if qid.startswith(HOTPLUG_PREFIX) and "pci_bridge" in dev:
                    ports[qid] = bool(dev["pci_bridge"].get("devices"))
        for qid in sorted(ports):
            if not ports[qid]:
                return qid
        raise VmkitError(f"no free hotplug slot: the VM has {HOTPLUG_PORTS}; unplug a device first")

    def attach_disk(self, disk: Disk, device_id: str) -> None:
        ro = disk.readonly
        with QMP(self.sockets["qmp"]) as q:
            port = self._free_port(q)
            q.execute(
                "blockdev-add",
                {
                    "driver": "file",
                    "node-name": f"{device_id}-file",
                    "filename": str(disk.file),
                    "read-only": ro,
                },
            )
            try:
                q.execute(
                    "blockdev-add",
                    {
                        "driver": disk.format,
                        "node-name": f"{device_id}-fmt",
                        "file": f"{device_id}-file",
                        "read-only": ro,
                    },
                )
                try:
                    q.execute(
                        "device_add",
                        {
                            "driver": "virtio-blk-pci",
                            "drive": f"{device_id}-fmt",
                            "id": device_id,
                            "bus": port,
                        },
                    )
                except QMPError:
                    q.execute("blockdev-del", {"node-name": f"{device_id}-fmt"})
                    raise
            except QMPError:
                q.execute("blockdev-del", {"node-name": f"{device_id}-file"})
                raise

    def detach_disk(self, device_id: str) -> None:
        with QMP(self.sockets["qmp"]) as q:
            _device_del(q, device_id)
            q.execute("blockdev-del", {"node-name": f"{device_id}-fmt"})
            q.execute("blockdev-del", {"node-name": f"{device_id}-file"})

    def attach_net(
        self,
        net: Network,
        device_id: str,
        mac: str,
        switch: tuple[Path, Path] | None = None,
    ) -> None:
        with QMP(self.sockets["qmp"]) as q:
            port = self._free_port(q)
            if net.mode == "tap":
                from vmkit.net import tap as taps

                assert net.tap is not None
                fd = taps.open_existing_tap(net.tap, net.netns, net.bridge)
                try:  # QEMU gets its own copy of the fd over the QMP socket (SCM_RIGHTS)
                    q.execute("getfd", {"fdname": f"{device_id}-fd"}, fd=fd)
                finally:
                    os.close(fd)
                netdev: dict[str, Any] = {
                    "type": "tap",
                    "id": f"{device_id}-net",
                    "fd": f"{device_id}-fd",
                }
            elif net.mode in ("user", "nat"):
                netdev = {"type": "user", "id": f"{device_id}-net"}
            elif net.mode == "switch" and switch is not None:
                remote, local = switch
                local.unlink(missing_ok=True)
                netdev = {
                    "type": "dgram",
                    "id": f"{device_id}-net",
                    "local": {"type": "unix", "path": str(local)},
                    "remote": {"type": "unix", "path": str(remote)},
                }
            else:
                raise NotSupported(f"hot-plugging a {net.mode} NIC is not supported on QEMU yet")
            q.execute("netdev_add", netdev)
            try:
                q.execute(
                    "device_add",
                    {
                        "driver": "virtio-net-pci",
                        "netdev": f"{device_id}-net",
                        "mac": mac,
                        "id": device_id,
                        "bus": port,
                    },
                )
            except QMPError:
                q.execute("netdev_del", {"id": f"{device_id}-net"})
                raise

    def detach_net(self, device_id: str) -> None:
        with QMP(self.sockets["qmp"]) as q:
            _device_del(q, device_id)
            q.execute("netdev_del", {"id": f"{device_id}-net"})

    def add_port(self, nic: int, host_ip: str, host: int, guest: int, proto: str) -> None:
        # QMP has no hostfwd command; the monitor's is reached through human-monitor-command.
        _hmp(self.sockets, f"hostfwd_add net{nic} {proto}:{host_ip}:{host}-:{guest}")

    def remove_port(self, nic: int, host_ip: str, host: int, proto: str) -> None:
        _hmp(self.sockets, f"hostfwd_remove net{nic} {proto}:{host_ip}:{host}", ok="removed")

    def start_incoming(self, uri: str) -> None:
        return None  # `-incoming URI` in the argv already listens

    def send_migration(self, uri: str, timeout: float) -> None:
        with QMP(self.sockets["qmp"], timeout=10.0) as q:
            _events_on(q)
            q.execute("migrate", {"uri": uri})
            await_migration(q, "migrating", timeout)
            q.execute("quit")


def _hmp(sockets: dict[str, str], command: str, ok: str = "") -> None:
    """Run a monitor command; its output must be empty or contain `ok` (HMP has no errors
    as such, only text)."""
    with QMP(sockets["qmp"]) as q:
        out = str(q.execute("human-monitor-command", {"command-line": command}) or "").strip()
    if out and not (ok and ok in out):
        raise VmkitError(f"QEMU refused `{command}`: {out}")


def _events_on(q: QMP) -> None:
    """Events on, and the RAM in the stream: a restored copy loaded its state with
    `x-ignore-shared`, and QEMU keeps capabilities for the next (outgoing) migration."""
    caps = [{"capability": "events", "state": True}]
    caps.append({"capability": "x-ignore-shared", "state": False})
    q.execute("migrate-set-capabilities", {"capabilities": caps})


def _device_del(q: QMP, device_id: str) -> None:
    """Ask the guest to release the device and wait until QEMU says it is gone."""
    q.execute("device_del", {"id": device_id})
    deadline = time.monotonic() + UNPLUG_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise VmkitError(
                f"the guest did not release {device_id} within {UNPLUG_TIMEOUT:g}s "
                "(it must support PCIe/ACPI hot-unplug); the unplug request stays pending"
            )
        try:
            event = q.wait_event({"DEVICE_DELETED"}, left)
        except QMPError:
            continue
        if event.get("data", {}).get("device") == device_id:
            return
