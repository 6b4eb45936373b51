"""A driver plans; a Control drives one running VMM.

`Driver` checks a spec and turns it into a typed `LaunchPlan` (pure: runs nothing), and
`bind(sockets, vm_dir)` returns the `Control` of a running VMM, which holds its own sockets.
What a driver can do beyond start/stop is the set of ability protocols
(`drivers/abilities.py`) its Control (or, for planning a restore, the driver) implements;
`Driver.capabilities` derives those from the classes, so there is one answer to "can it?".
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

from vmkit.drivers.capabilities import CAPABILITY_TEXT as CAPABILITY_TEXT
from vmkit.drivers.capabilities import DERIVED as DERIVED
from vmkit.drivers.capabilities import Capabilities as Capabilities
from vmkit.errors import NotSupported, VmkitError
from vmkit.hostinfo import machine_arch
from vmkit.plain import Frozen, Plain

# Not typing's, and plain classes rather than dataclasses: a running VM's `vmkit ls` binds
# its driver's Control, and those imports cost it ~25 ms (plain.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, ClassVar

    from vmkit.spec import MachineSpec
    from vmkit.storage.kernel import KernelInfo


class LaunchContext(Plain):
    """Where the driver must put things; decided by the Machine layer."""

    _fields = ("vm_dir", "serial_log", "events_log", "sockets", "accelerator", "switch_sockets")
    __slots__ = _fields

    def __init__(
        self,
        vm_dir: Path,
        serial_log: Path,
        events_log: Path,
        sockets: dict[str, Path],
        accelerator: str,  # resolved: kvm | hvf | tcg
        switch_sockets: dict[str, Path] | None = None,  # switch name -> its socket
    ):
        self.vm_dir, self.serial_log, self.events_log = vm_dir, serial_log, events_log
        self.sockets, self.accelerator = sockets, accelerator
        self.switch_sockets = {} if switch_sockets is None else switch_sockets


class ReadinessProbe(Frozen):
    _fields = ("ready", "ip", "waiting_for")
    __slots__ = _fields

    def __init__(
        self,
        ready: bool,
        ip: str | None,
        waiting_for: str,  # what ready means for this guest, for the timeout message
    ):
        self.ready, self.ip, self.waiting_for = ready, ip, waiting_for


class TapFd(Frozen):
    """NIC `index` is a TAP whose open fd the VMM inherits; `placeholder` stands for the
    fd number in the argv until the launch opens it (shown as is by --dry-run)."""

    _fields = ("index", "placeholder")
    __slots__ = _fields

    def __init__(self, index: int, placeholder: str):
        self.index, self.placeholder = index, placeholder


class ShareServer(Frozen):
    """Share `index` is served by a virtiofsd that must listen on `socket` before launch."""

    _fields = ("index", "socket")
    __slots__ = _fields

    def __init__(self, index: int, socket: Path):
        self.index, self.socket = index, socket


class SwitchPort(Frozen):
    """The VMM binds `port` and sends to the socket of vmkit's switch `switch`."""

    _fields = ("switch", "port")
    __slots__ = _fields

    def __init__(self, switch: str, port: Path):
        self.switch, self.port = switch, port


class TapRef(Frozen):
    """An existing TAP the launch opens (in `netns`, on `bridge`) and hands over as an fd."""

    _fields = ("tap", "netns", "bridge")
    __slots__ = _fields

    def __init__(self, tap: str, netns: str | None = None, bridge: str | None = None):
        self.tap, self.netns, self.bridge = tap, netns, bridge


class ApiRequest(Frozen):
    """One REST request sent once the VMM answers (API-driven VMMs); `tap`: an existing
    TAP whose fd goes with it (SCM_RIGHTS)."""

    _fields = ("method", "endpoint", "body", "tap")
    __slots__ = _fields

    def __init__(self, method: str, endpoint: str, body: Any = None, tap: TapRef | None = None):
        self.method, self.endpoint, self.body, self.tap = method, endpoint, body, tap

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "endpoint": self.endpoint}
        out["body"] = self.body
        if self.tap is not None:
            out["pass_fd"] = self.tap.as_dict()
        return out


class LaunchPlan(Plain):
    """Everything a launch needs, typed: the argv, the control sockets, the REST requests
    that follow, and the file descriptors and sidecars the launch must provide."""

    _fields = (
        "argv",
        "sockets",
        "accelerator",
        "api_requests",
        "tap_fds",
        "shares",
        "switch_ports",
        "fifos",
    )
    __slots__ = _fields

    def __init__(
        self,
        argv: list[str],
        sockets: dict[str, Path],
        accelerator: str,
        api_requests: list[ApiRequest] | None = None,
        tap_fds: list[TapFd] | None = None,
        shares: list[ShareServer] | None = None,
        switch_ports: list[SwitchPort] | None = None,
        fifos: dict[str, Path] | None = None,  # made (0600) before the spawn
    ):
        self.argv, self.sockets, self.accelerator = argv, sockets, accelerator
        self.api_requests = [] if api_requests is None else api_requests
        self.tap_fds = [] if tap_fds is None else tap_fds
        self.shares = [] if shares is None else shares
        self.switch_ports = [] if switch_ports is None else switch_ports
        self.fifos = {} if fifos is None else fifos

    def all_sockets(self) -> dict[str, Path]:
        """Control sockets plus the sockets the sidecars and VMM bind, and the FIFOs the
        VMM opens (all removed at stop)."""
        out = dict(self.sockets)
        out.update(self.fifos)
        out.update({f"fs{s.index}": s.socket for s in self.shares})
        out.update({f"port{i}": p.port for i, p in enumerate(self.switch_ports)})
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "sockets": {k: str(v) for k, v in self.all_sockets().items()},
            "fifos": {k: str(v) for k, v in self.fifos.items()},
            "accelerator": self.accelerator,
            "api_requests": [r.to_json() for r in self.api_requests],
        }


class RestorePlan(Plain):
    """A VMM that takes in a saved state (`launch`), and what `Control.complete_restore`
    does once it answers: stage `files` and `links` (path -> text / target) and load the
    state from `state_dir`, with the snapshot's driver metadata `meta`."""

    _fields = ("launch", "state_dir", "meta", "files", "links", "request")
    __slots__ = _fields

    def __init__(
        self,
        launch: LaunchPlan,
        state_dir: Path,
        meta: dict[str, Any],
        files: dict[Path, str] | None = None,
        links: dict[Path, Path] | None = None,
        request: dict[str, Any] | None = None,
    ):
        self.launch, self.state_dir, self.meta = launch, state_dir, meta
        self.files = {} if files is None else files
        self.links = {} if links is None else links
        self.request = request

    def stage(self) -> None:
        """Write `files` (0600, folders 0700) and `links` before the state is loaded."""
        for path, text in self.files.items():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
        for link, target in self.links.items():
            link.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(target)


class ExitCause(Frozen):
    """Why a VMM exited, as far as its own logs tell."""

    _fields = ("clean", "reason")
    __slots__ = _fields

    def __init__(self, clean: bool, reason: str):  # clean: the guest powered off (or the
        self.clean, self.reason = clean, reason  # VMM was asked to quit)


class Control(abc.ABC):
    """One running VMM, bound to its control sockets. Cheap: made per operation.

    The optional verbs (pause, snapshot, hot-plug, ...) are ability protocols
    (drivers/abilities.py): a subclass implements the methods of those it can do.
    """

    def __init__(self, driver: Driver, sockets: Mapping[str, str | Path], vm_dir: Path):
        self.driver = driver
        self.sockets = {k: str(v) for k, v in sockets.items()}
        self.vm_dir = vm_dir

    @abc.abstractmethod
    def state(self, timeout: float = 2.0) -> str | None:
        """The VMM's own view of the guest (running, paused, ...); None if not answering."""

    @abc.abstractmethod
    def power_button(self) -> None:
        """Press the ACPI power button (or the VMM's equivalent)."""

    def hard_stop(self) -> str | None:
        """A VMM-level hard stop, tried after the guest ignored the power button and before
        SIGTERM (Cloud Hypervisor `vm.shutdown`, vfkit `HardStop`). Returns the name of the
        step (reported by `vmkit stop`), or None when the VMM has none (QEMU: SIGTERM
        already makes it shut down cleanly)."""
        return None

    def after_launch(self, plan: LaunchPlan) -> None:
        """Once the control socket answers: send `plan.api_requests` (Cloud Hypervisor
        creates and boots the VM this way). Default: nothing."""
        return None

    def probe_readiness(self, spec: dict[str, Any]) -> ReadinessProbe | None:
        """For guests that cannot print vmkit's readiness line (macOS guests): whether the
        guest is ready by other signs, polled while waiting. None: the guest prints the
        line on its serial console (the default)."""
        return None

    def inspect_extra(self) -> dict[str, Any]:
        """Extra facts for `vmkit inspect` from the running VMM (vfkit: GET /vm/inspect)."""
        return {}

    def device_present(self, device_id: str) -> bool:
        """Whether the VMM still has `device_id` after a detach (Cloud Hypervisor keeps it
        until the guest acknowledges the eject). Default: a detach is immediate."""
        return False

    def migration_result(self) -> str | None:
        """On a migration source, after `send_migration` returned: "finished", "failed"
        (the source keeps the guest) or None while under way. Default "finished":
        `send_migration` itself waited for completion (QEMU)."""
        return "finished"


class Driver(abc.ABC):
    name: ClassVar[str]
    # Declared features (boot kinds, disk formats, NIC modes, ...). The verbs in DERIVED
    # are not declared: `capabilities` derives them from the Control's abilities.
    features: ClassVar[Capabilities]
    control_class: ClassVar[type[Control]]
    binary_names: tuple[str, ...]
    install_hint: ClassVar[str]
    # Control sockets the VMM needs, role -> short file suffix in the runtime dir.
    socket_roles: ClassVar[dict[str, str]] = {}
    # A driver checked only against test doubles and the VMM's documented interface (its
    # hypervisor cannot run where the tests run) names the platform it has not run on yet;
    # docs/capabilities.md then shows its tested capabilities as "contract-tested, not yet
    # run on <that>", never as supported.
    not_yet_run_on: ClassVar[str | None] = None
    # A driver whose real VMM runs in the tests but cannot boot a guest there says how far
    # that goes; capabilities with `vmm_capability` tests then show this, not "supported".
    vmm_tested: ClassVar[str | None] = None
    # The migration target writes the source's serial file (its config came from the
    # source): vmkit moves that file into the target's folder once the target runs.
    serial_follows_migration: ClassVar[bool] = False
    # Files in the VM's folder that are machine state besides its disks (QEMU: the UEFI
    # variable store): snapshots keep a copy, restored and migrated copies start from it.
    vm_state_files: ClassVar[tuple[str, ...]] = ()
    # Whether `plan_restore` of this driver can map the snapshot's memory on demand.
    memory_restore_modes: ClassVar[tuple[str, ...]] = ("copy",)

    # An environment variable naming the VMM binary explicitly (e.g. VMKIT_CLOUD_HYPERVISOR).
    binary_env: ClassVar[str | None] = None
    # Runs guests of another CPU architecture (QEMU's TCG); `driver: auto` picks it for them.
    emulates: ClassVar[bool] = False
    # vsock CIDs are one space for the whole host (QEMU's vhost-vsock), not per VM (Cloud
    # Hypervisor's hybrid socket, vfkit's fixed CID): a restored copy needs its own
    vsock_cids_host_wide: ClassVar[bool] = False
    # Whether `driver: auto` may pick this driver at all (krunkit is only ever asked for).
    auto_pick: ClassVar[bool] = True

    def __init__(self, arch: str | None = None):
        self.arch = arch or machine_arch()

    @classmethod
    def auto_usable(cls) -> bool:
        """Whether `driver: auto` should pick this driver on this host (cheap checks), beyond
        the host platform and binary `drivers.AUTO_PREREQ` checks before importing it."""
        return False

    @property
    def capabilities(self) -> Capabilities:
        from vmkit.drivers.abilities import derived_capabilities

        return self.features.replace(**derived_capabilities(self))

    def bind(self, sockets: Mapping[str, str | Path], vm_dir: Path) -> Control:
        """The Control of this driver's VMM listening on `sockets`."""
        return self.control_class(self, sockets, vm_dir)

    def find_binary(self) -> str:
        if self.binary_env and (explicit := os.environ.get(self.binary_env)):
            if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
                raise VmkitError(f"{self.binary_env}={explicit} is not an executable file")
            return explicit
        import shutil

        for candidate in self.binary_names:
            found = shutil.which(candidate)
            if found:
                return found
        raise VmkitError(
            f"{self.binary_names[0]} not found on PATH: {self.install_hint}",
        )

    def binary_or_name(self) -> str:
        """The binary's path, or just its name (for --dry-run on a host without it)."""
        try:
            return self.find_binary()
        except VmkitError:
            return self.binary_names[0]

    @abc.abstractmethod
    def check(self, spec: MachineSpec) -> None:
        """Raise NotSupported/InvalidInput for what this driver cannot do with `spec`."""

    @abc.abstractmethod
    def plan(self, spec: MachineSpec, ctx: LaunchContext) -> LaunchPlan:
        """The exact argv (and API requests) that launch `spec`; pure, runs nothing."""

    @abc.abstractmethod
    def exit_cause(self, ctx: LaunchContext) -> ExitCause | None:
        """Read the VMM's logs after it exited; None when they say nothing."""

    def host_limits(self, spec: MachineSpec, running: Callable[[], list[dict[str, Any]]]) -> None:
        """Refuse a launch the host cannot take, given the specs of this driver's running
        VMs (e.g. vfkit: at most 2 macOS guests per Mac). `running` reads every VM in the
        store: a driver calls it only when it limits this spec. Default: no limit."""
        return None

    def prepare(self, spec: MachineSpec, ctx: LaunchContext) -> None:
        """Make the files `plan` refers to (e.g. a decompressed kernel in the VM dir); runs
        right before launch, never on --dry-run."""
        return None

    def forwards_ports(self, net: dict[str, Any]) -> bool:
        """Whether the VMM itself forwards this NIC's published ports (QEMU's user network);
        else vmkit's relay (net/portfwd) does, to the guest's address."""
        return False

    def check_rosetta(self, spec: MachineSpec) -> None:
        """`rosetta: true` only where the driver can share it (vfkit on Apple silicon)."""
        if spec.rosetta and not self.features.rosetta:
            raise NotSupported(
                f"rosetta: the {self.name} driver cannot share Rosetta; it exists only with "
                "driver: vfkit on an Apple silicon Mac (remove rosetta, or use arch: x86_64 "
                "to emulate)"
            )

    @classmethod
    def kernel_support(cls, info: KernelInfo) -> dict[str, str]:
        """How this driver boots the kernel `info` describes ("driver/arch" -> "yes",
        or "no: why"), following the VMM's documented loaders."""
        return {cls.name: "no: this driver boots no kernel directly"}

    def guest_ip(self, spec: dict[str, Any]) -> str | None:
        """The guest's IP when the VMM or host knows it (vfkit: the macOS DHCP leases);
        used only when the readiness line gave none. `spec` is the stored spec JSON (no
        validation: this runs on every `vmkit ls`)."""
        return None
