"""The running VMM's Control for the vfkit driver (see driver.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from vmkit.drivers import dhcpd_leases
from vmkit.drivers.base import (
    Control,
    ReadinessProbe,
)
from vmkit.drivers.vfkit_api import VfkitAPI, VfkitAPIError, VfkitDropped

if TYPE_CHECKING:
    pass
from vmkit.drivers.vfkit.driver import (
    VfkitDriver,
)


class VfkitControl(Control):
    """vfkit's REST API (`--restful-uri unix://`): state, Stop, HardStop, Pause/Resume."""

    driver: VfkitDriver

    def api(self, timeout: float = 2.0) -> VfkitAPI:
        return VfkitAPI(self.sockets["rest"], timeout)

    def state(self, timeout: float = 2.0) -> str | None:
        if "rest" not in self.sockets:
            return None
        try:
            state = self.api(timeout).vmkit_state()
        except VfkitAPIError:
            return None
        # Stopped while the process still exists: it is on its way out.
        return "stopping" if state == "stopped" else state

    def power_button(self) -> None:
        self.api().set_state("Stop")

    def hard_stop(self) -> str | None:
        if not self.driver.has_hard_stop:
            return None
        self.api().set_state("HardStop")
        return "HardStop"

    def inspect_extra(self) -> dict[str, Any]:
        if "rest" not in self.sockets:
            return {}
        api = self.api()
        out: dict[str, Any] = {}
        try:
            out["state"] = api.state()
            if self.driver.has_hard_stop:  # vfkit proper; krunkit has no /vm/inspect
                out["inspect"] = api.inspect()
        except VfkitAPIError as exc:
            out["error"] = str(exc)
        return out

    def probe_readiness(self, spec: dict[str, Any]) -> ReadinessProbe | None:
        """A macOS guest prints no readiness line: it is ready once vfkit says it runs and,
        with a NAT NIC, macOS's DHCP server has leased it an address in this boot."""
        if (spec.get("boot") or {}).get("kind") != "macos":
            return None
        drv = self.driver
        macs = drv._nat_macs(spec)
        waiting_for = "running" + (
            f" with a fresh DHCP lease for {macs[0]} in {drv.leases or dhcpd_leases.leases_path()}"
            if macs
            else ""
        )
        if self.state(timeout=1.0) != "running":
            return ReadinessProbe(False, None, waiting_for)
        if not macs:
            return ReadinessProbe(True, None, waiting_for)
        try:
            before = json.loads((self.vm_dir / drv.LEASES_BEFORE).read_text())
        except (OSError, ValueError):
            before = {}
        for mac in macs:
            lease = dhcpd_leases.lease_for_mac(mac, drv.leases)
            if lease is not None and lease.expires > int(before.get(mac, 0)):
                return ReadinessProbe(True, lease.ip, waiting_for)
        return ReadinessProbe(False, None, waiting_for)


class PausableVfkitControl(VfkitControl):
    """vfkit proper: Pause / Resume over REST (krunkit has neither)."""

    def pause(self) -> None:
        self.api().set_state("Pause")

    def resume(self) -> None:
        self.api().set_state("Resume")


class KrunkitControl(VfkitControl):
    def power_button(self) -> None:
        """POST Stop. krunkit reads the request once and closes: if the JSON body came in a
        second write the exchange breaks, but krunkit saw a POST and is stopping."""
        try:
            self.api().set_state("Stop")
        except VfkitDropped:
            return
