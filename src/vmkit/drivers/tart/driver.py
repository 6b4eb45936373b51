"""Tart driver (macOS, Apple silicon): `tart run` is the VMM process, one per VM, as with
vfkit; the VM itself (its disk, NVRAM, MAC) is a Tart VM cloned from an OCI image
(`boot: {kind: tart, image: ghcr.io/cirruslabs/ubuntu:latest}`) or created empty.

Tart has no control socket: vmkit asks its CLI (`tart get`, `tart ip`, `tart stop`) with
TART_HOME set to the VM's private store (tartcli). Readiness is "running with an address
from `tart ip`" (Tart guests print no readiness line vmkit could read).

Flags newer than some Tart releases are gated on what the installed `tart run --help` /
`tart set --help` lists: Tart publishes no changelog to read version thresholds from, and
its help is the documented CLI. The installed version (`tart --version`) is named in the
refusal and shown by `vmkit doctor`.

Not run on a Mac yet: checked against Tart's documented CLI and a named test double
(tests/contract/tart_double.py), so docs/capabilities.md says "contract-tested".
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vmkit.drivers import register
from vmkit.drivers.base import (
    Capabilities,
    Control,
    Driver,
    ExitCause,
    LaunchContext,
    LaunchPlan,
    ReadinessProbe,
)
from vmkit.drivers.tart import tartcli
from vmkit.errors import InvalidInput, NotSupported, VmkitError
from vmkit.hostinfo import machine_arch

if TYPE_CHECKING:
    from vmkit.spec import MachineSpec

# feature -> (tart command, what its --help must mention)
FEATURES: dict[str, tuple[str, str]] = {
    "--dir ...:tag=": ("run", "tag="),
    "--rosetta": ("run", "--rosetta"),
    "--disk": ("run", "--disk"),
    "--net-bridged": ("run", "--net-bridged"),
    "--net-host": ("run", "--net-host"),
    "set --disk-size": ("set", "--disk-size"),
}
LICENCE = (
    "Tart is Fair Source (version 0.9): free on personal machines and for up to 100 CPU "
    "cores per organisation, paid beyond that (see its LICENSE)"
)


@register
class TartDriver(Driver):
    name = "tart"
    binary_names: tuple[str, ...] = ("tart",)
    binary_env: ClassVar[str | None] = "VMKIT_TART"
    install_hint: ClassVar[str] = (
        f"Tart runs only on Apple silicon Macs: `brew install cirruslabs/cli/tart` ({LICENCE})"
    )
    not_yet_run_on: ClassVar[str | None] = "macOS"
    auto_pick: ClassVar[bool] = False  # only when asked for: `driver: tart`
    control_class: ClassVar[type[Control]]
    features = Capabilities(
        boot_oci=True,  # `tart clone IMAGE` (OCI registries), or `tart create --linux`
        disk_raw=True,  # extra disks: --disk=PATH[:ro]
        net_user=True,  # Tart's default shared (NAT) network
        net_vmnet=True,  # vmnet:shared = that NAT, vmnet:bridged:IF --net-bridged, host --net-host
        shares=True,  # --dir=PATH:[ro,]tag=TAG (virtio-fs, read-only honoured)
        rosetta=True,  # --rosetta=rosetta
        graceful_stop=True,  # `tart stop` (SIGINT to `tart run`) -> SIGTERM -> SIGKILL
        kill=True,
        readiness=True,  # running, with an address from `tart ip`
        readopt=True,  # any vmkit process asks `tart get` under the VM's TART_HOME
    )

    def __init__(self, arch: str | None = None, version: tuple[int, ...] | None = None):
        super().__init__(arch or machine_arch())
        self._version = version

    # ---- checks ----------------------------------------------------------------------------
    def check(self, spec: MachineSpec) -> None:
        from vmkit.spec import TartBoot

        if not isinstance(spec.boot, TartBoot):
            raise InvalidInput("boot.kind: the tart driver boots Tart VMs: use boot.kind 'tart'")
        if spec.arch not in ("auto", None) and spec.arch not in (self.arch, "arm64"):
            raise NotSupported(f"arch: Tart runs only {self.arch} guests")
        if spec.accelerator not in ("auto", "hvf"):
            raise InvalidInput(
                f"accelerator: {spec.accelerator!r} does not apply to tart; use auto (or hvf)"
            )
        for field, given in (
            ("hugepages", spec.hugepages),
            ("vsock_cid", spec.vsock_cid is not None),
            ("topology", spec.topology is not None),
            ("balloon", spec.balloon),
            ("cloud_init", spec.cloud_init is not None),
            ("serial_log", spec.serial_log is not None),
            ("max_cpus/max_memory", spec.max_cpus is not None or spec.max_memory is not None),
        ):
            if given:
                raise NotSupported(f"{field}: not supported by vmkit's tart driver")
        self.check_rosetta(spec)
        if spec.rosetta and self.arch != "aarch64":
            raise NotSupported("rosetta: Rosetta exists only on Apple silicon Macs")
        self._check_networks(spec)
        for i, disk in enumerate(spec.disks):
            if disk.path is None:
                raise NotSupported(
                    f"disks[{i}]: the tart driver attaches existing raw images only (path:); "
                    "the VM's own disk comes with its Tart image (boot.disk_size grows it)"
                )
            if disk.format != "raw":
                raise NotSupported(f"disks[{i}]: Tart attaches raw disk images only")
            if disk.iops or disk.bandwidth:
                raise NotSupported(f"disks[{i}].iops/bandwidth: Tart has no I/O limits")
            tartcli.disk_option(f"disks[{i}].path", disk.path, disk.readonly)
        for i, share in enumerate(spec.shares):
            tartcli.colon_free(f"shares[{i}].host", share.host)
            tartcli.dir_option(share.host, share.tag, share.readonly)

    @staticmethod
    def _check_networks(spec: MachineSpec) -> None:
        if not spec.networks:
            raise NotSupported(
                "networks: a Tart VM always has one NIC on Tart's shared (NAT) network; "
                "give --net user (networks: [user])"
            )
        if len(spec.networks) > 1:
            raise NotSupported("networks: vmkit's tart driver attaches exactly one NIC")
        net = spec.networks[0]
        if net.mode not in ("user", "nat", "vmnet"):
            raise NotSupported(
                f"networks[0]: mode {net.mode!r} is not available with Tart; use user (NAT), "
                "vmnet:bridged:IF or vmnet:host"
            )
        for field, given in (("ip", net.ip), ("publish", net.publish)):
            if given:
                raise NotSupported(
                    f"networks[0].{field}: not supported by vmkit's tart driver (Tart's DHCP "
                    "gives the address; `tart ip` reports it)"
                )

    # ---- versions and features -------------------------------------------------------------
    def version(self) -> tuple[int, ...] | None:
        if self._version is not None:
            return self._version
        from vmkit.drivers.vmm_version import installed_version

        try:
            return installed_version(self.find_binary())
        except VmkitError:
            return None

    def check_features(self, used: list[str]) -> None:
        """Refuse flags the installed Tart does not list in its --help (none known: no
        gate, e.g. on --dry-run without Tart)."""
        try:
            binary = self.find_binary()
        except VmkitError:
            return
        from vmkit.drivers.vmm_version import format_version

        for feature in used:
            command, marker = FEATURES[feature]
            text = tartcli.help_text(binary, command)
            if text and marker not in text:
                have = self.version()
                which = f"Tart {format_version(have)}" if have else "the installed Tart"
                raise NotSupported(
                    f"{which} does not know `tart {command} {feature}` (not in `tart "
                    f"{command} --help`): `brew upgrade cirruslabs/cli/tart`"
                )

    # ---- argv ------------------------------------------------------------------------------
    def plan(self, spec: MachineSpec, ctx: LaunchContext) -> LaunchPlan:
        self.check(spec)
        home = tartcli.home_of(ctx.vm_dir)
        tartcli.colon_free("the VM's folder (under VMKIT_HOME)", ctx.vm_dir)
        argv = ["/usr/bin/env", f"TART_HOME={home}", self.binary_or_name()]
        argv += ["run", tartcli.VM, "--no-graphics"]
        used: list[str] = []
        for i, disk in enumerate(spec.disks):
            assert disk.path is not None
            argv.append(tartcli.disk_option(f"disks[{i}].path", disk.path, disk.readonly))
            used.append("--disk")
        for share in spec.shares:
            argv.append(tartcli.dir_option(share.host, share.tag, share.readonly))
            used.append("--dir ...:tag=")
        if spec.rosetta:
            argv.append("--rosetta=rosetta")
            used.append("--rosetta")
        net = spec.networks[0]
        if net.vmnet == "bridged":
            argv.append(f"--net-bridged={net.interface}")
            used.append("--net-bridged")
        elif net.vmnet == "host":
            argv.append("--net-host")  # Tart runs it through Softnet (its SUID helper)
            used.append("--net-host")
        self.check_features(used)
        return LaunchPlan(
            argv=argv,
            sockets={"tart": tartcli.control_path(ctx.vm_dir)},
            accelerator="hvf",
        )

    def prepare(self, spec: MachineSpec, ctx: LaunchContext) -> None:
        """Make the Tart VM on first start (`tart clone IMAGE vm`, or `tart create vm
        --linux`), give it the MAC vmkit pinned in the spec (unique in vmkit's store: clones
        of one image would share theirs, and Tart's own check sees one TART_HOME only),
        then `tart set` its CPUs and memory from the spec."""
        from vmkit.spec import TartBoot

        assert isinstance(spec.boot, TartBoot)
        binary = self.find_binary()
        home = tartcli.home_of(ctx.vm_dir)
        tartcli.shared_cache(home)
        gib = spec.boot.disk_size
        size = [] if gib is None else ["--disk-size", str(gib >> 30)]
        if not (home / "vms" / tartcli.VM / "config.json").exists():
            if spec.boot.image is not None:
                tartcli.run(binary, home, ["clone", spec.boot.image, tartcli.VM], timeout=None)
                if size:
                    self.check_features(["set --disk-size"])
                    tartcli.run(binary, home, ["set", tartcli.VM, *size])
            else:
                tartcli.run(binary, home, ["create", tartcli.VM, "--linux", *size], timeout=None)
        mac = spec.networks[0].mac
        if mac is not None:
            tartcli.set_mac(home, mac)
        memory = str(spec.memory >> 20)
        tartcli.run(binary, home, ["set", tartcli.VM, "--cpu", str(spec.cpus), "--memory", memory])

    def exit_cause(self, ctx: LaunchContext) -> ExitCause | None:
        """`tart run` exits 0 once the guest has stopped, and prints the error otherwise;
        vmkit sees only its log: an error line there explains a failed exit."""
        try:
            text = (ctx.vm_dir / "vmm.log").read_text(errors="replace")
        except FileNotFoundError:
            return None
        lines = [ln for ln in text.rsplit("--- vmkit: starting", 1)[-1].splitlines()[1:] if ln]
        errors = [ln for ln in lines if "rror" in ln or "failed" in ln.lower()]
        if errors:
            return ExitCause(False, f"tart: {errors[-1].strip()}")
        return None


class TartControl(Control):
    """Tart has no control socket: each call asks its CLI under the VM's TART_HOME (the
    parent of the recorded `tart` path)."""

    driver: TartDriver

    @property
    def home(self) -> Path | None:
        path = self.sockets.get("tart")
        return Path(path).parent if path else None

    def _binary(self) -> str | None:
        try:
            return self.driver.find_binary()
        except VmkitError:
            return None

    def state(self, timeout: float = 2.0) -> str | None:
        home, binary = self.home, self._binary()
        if home is None or binary is None:
            return None
        info = tartcli.get(binary, home, timeout=max(timeout, 5.0))
        state = str((info or {}).get("State", "")).lower()
        return {"running": "running", "suspended": "paused"}.get(state)

    def power_button(self) -> None:
        """`tart stop vm`: Tart sends SIGINT to its `tart run` and waits; vmkit's own
        escalation (SIGTERM, SIGKILL) takes over if the VM is still there when vmkit's
        timeout ends, so Tart's own fallback is set far beyond it."""
        home = self.home
        if home is None:
            raise VmkitError("no Tart store recorded for this VM")
        argv = [self.driver.find_binary(), "stop", tartcli.VM, "--timeout", "86400"]
        proc = subprocess.Popen(
            argv,
            env=tartcli.env_for(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=1.0)
        except subprocess.TimeoutExpired:
            return  # still waiting for the VM to go: the signal was sent
        if proc.returncode != 0:
            said = out.decode(errors="replace").strip()[-300:]
            raise VmkitError(f"`tart stop` failed (exit {proc.returncode}): {said}")

    def probe_readiness(self, spec: dict[str, Any]) -> ReadinessProbe | None:
        waiting_for = "running with an address from `tart ip`"
        binary = self._binary()
        if binary is None or self.state(timeout=2.0) != "running":
            return ReadinessProbe(False, None, waiting_for)
        address = tartcli.ip(binary, tartcli.home_of(self.vm_dir))
        return ReadinessProbe(address is not None, address, waiting_for)

    def inspect_extra(self) -> dict[str, Any]:
        home, binary = self.home, self._binary()
        if home is None or binary is None:
            return {}
        return {"tart": tartcli.get(binary, home), "tart_home": str(home)}


TartDriver.control_class = TartControl
