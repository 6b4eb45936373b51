"""MachineSpec: what the user asked for, validated, serialisable. Knows nothing of drivers.

Load with `load_spec_file()` (YAML/JSON; relative paths resolve against the file's folder) or
`spec_from_dict()`; every invalid field raises `SpecError` naming the field, the value and
what is allowed. The boot kinds (spec_boot) and device models (spec_devices) are re-exported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from vmkit.errors import SpecError
from vmkit.imagefmt import sniff_format
from vmkit.names import validate_name
from vmkit.record import (
    BOOL,
    FLOAT,
    STR,
    ListOf,
    Maybe,
    Nested,
    Problems,
    Record,
    check,
    conv,
    field,
    integer,
    literal,
    then,
)
from vmkit.spec_boot import BOOT
from vmkit.spec_boot import Boot as Boot
from vmkit.spec_boot import EfiBoot as EfiBoot
from vmkit.spec_boot import LinuxBoot as LinuxBoot
from vmkit.spec_boot import MacosBoot as MacosBoot
from vmkit.spec_boot import TartBoot as TartBoot
from vmkit.spec_boot import TinyBoot as TinyBoot
from vmkit.spec_devices import (
    OPT_PATH,
    SIZE_SCHEMA,
)
from vmkit.spec_devices import (
    PUBLISH_RE as PUBLISH_RE,
)
from vmkit.spec_devices import (
    TAG_RE as TAG_RE,
)
from vmkit.spec_devices import (
    CloudInit as CloudInit,
)
from vmkit.spec_devices import (
    CpuTopology as CpuTopology,
)
from vmkit.spec_devices import (
    Disk as Disk,
)
from vmkit.spec_devices import (
    Network as Network,
)
from vmkit.spec_devices import (
    Share as Share,
)
from vmkit.spec_devices import (
    network_shorthand as network_shorthand,
)
from vmkit.spec_devices import (
    parse_publish as parse_publish,
)
from vmkit.units import SIZE_HELP, format_size, parse_size

MARKER_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
DRIVER_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")
MIN_MEMORY = 16 << 20

AccelName = Literal["auto", "kvm", "hvf", "tcg"]
ArchName = Literal["auto", "x86_64", "aarch64"]
ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def _marker(v: str) -> str:
    if not MARKER_RE.match(v):
        raise ValueError(
            f"{v!r} is not a usable marker; use 1-64 letters, digits or '_.:-' (no spaces)"
        )
    return v


def _timeout(v: float) -> float:
    if not 0 < v <= 86400:
        raise ValueError(f"{v!r} is out of range; use seconds, > 0 and <= 86400")
    return v


class Readiness(Record):
    """The guest announces readiness with `<marker> <ip>` (or `<marker> -`) on its console."""

    marker: str = field(then(STR, _marker), default="VMKIT_READY")
    timeout: float = field(then(FLOAT, _timeout), default=120.0)


def _cpus(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | str) or not str(v).isdecimal():
        raise ValueError(f"{v!r} is not a whole number of CPUs; use 1-256")
    n = int(v)
    if not 1 <= n <= 256:
        raise ValueError(f"{n} is out of range; use 1-256")
    return n


def _memory(v: Any) -> int:
    n = parse_size(v)
    if n < MIN_MEMORY:
        raise ValueError(f"{v!r} is too small; give at least {format_size(MIN_MEMORY)}")
    if n % (1 << 20):
        raise ValueError(f"{v!r} is not a whole number of MiB; hypervisors need MiB units")
    return n


def _driver(v: str) -> str:
    if not DRIVER_RE.match(v):
        raise ValueError(f"{v!r} is not a driver name; use auto, qemu, cloud-hypervisor, ...")
    return v


def _arch(v: Any) -> Any:
    return ARCH_ALIASES.get(v, v) if isinstance(v, str) else v


def _networks(v: Any) -> Any:
    """Shorthands (`nat`, `switch:lan`, a lone string) to NIC mappings; `none` alone: no NIC."""
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list):
        v = [network_shorthand(n) if isinstance(n, str) else n for n in v]
        if any(isinstance(n, dict) and n.get("mode") == "none" for n in v):
            if len(v) > 1:
                raise ValueError("'none' cannot be combined with other networks")
            return []
    return v


class _Networks(ListOf):
    def __call__(self, value: Any, ctx: dict[str, Any], loc: str, problems: Problems) -> Any:
        try:
            value = _networks(value)
        except ValueError as exc:
            problems.append((loc, str(exc)))
            return None
        return super().__call__(value, ctx, loc, problems)


CPUS = conv(_cpus, {"type": ["integer", "string"], "minimum": 1, "maximum": 256})
MEMORY = conv(_memory, dict(SIZE_SCHEMA))
ARCH = literal(ArchName)


class MachineSpec(Record):
    """What the user asked for: a VM's hardware, boot, devices and readiness rule."""

    name: str = field(conv(validate_name, {"type": "string"}))
    cpus: int = field(CPUS, default=1)
    memory: int = field(MEMORY, default=256 << 20)
    max_cpus: int | None = field(Maybe(CPUS), default=None, doc="vCPU ceiling for `vmkit resize`")
    topology: CpuTopology | None = field(Maybe(Nested(CpuTopology)), default=None)
    hugepages: bool = field(BOOL, default=False, doc="back guest RAM with huge pages")
    vsock_cid: int | None = field(
        Maybe(integer(ge=3)),
        default=None,
        doc="virtio-vsock guest CID; vmkit then reaches SSH over vsock port 22, which "
        "the guest must serve (systemd >= 256 does; vfkit/krunkit: 3, their fixed CID)",
    )
    max_memory: int | None = field(Maybe(MEMORY), default=None, doc="memory ceiling for resize")
    boot: Boot = field(BOOT, factory=lambda: TinyBoot(), doc="default: the tiny guest")
    disks: list[Disk] = field(ListOf(Nested(Disk)), factory=list)
    networks: list[Network] = field(_Networks(Nested(Network)), factory=list)
    shares: list[Share] = field(ListOf(Nested(Share)), factory=list)
    cloud_init: CloudInit | None = field(Maybe(Nested(CloudInit)), default=None)
    serial_log: Path | None = field(OPT_PATH, default=None)
    rng: bool = field(BOOL, default=True)
    balloon: bool = field(BOOL, default=False)
    rosetta: bool = field(
        BOOL,
        default=False,
        doc="vfkit on Apple silicon: share Rosetta with the guest (virtio-fs tag "
        "`rosetta`) so it can run x86_64 Linux binaries",
    )
    readiness: Readiness = field(Nested(Readiness), factory=lambda: Readiness())
    driver: str = field(
        then(STR, _driver),
        default="auto",
        doc="auto, or a driver: qemu, cloud-hypervisor, vfkit, ...",
    )
    accelerator: AccelName = field(literal(AccelName), default="auto")
    arch: ArchName = field(
        conv(lambda v: ARCH.fn(_arch(v), {}), {"enum": ["auto", "x86_64", "aarch64"]}),
        default="auto",
        doc="guest CPU architecture; another than the host's runs emulated (QEMU TCG)",
    )

    @check
    def _topology(self) -> None:
        if self.topology is not None and self.topology.total != (self.max_cpus or self.cpus):
            raise ValueError(
                f"topology has {self.topology.total} vCPUs (threads x cores x dies x packages) "
                f"but max_cpus/cpus is {self.max_cpus or self.cpus}; they must match"
            )

    @check
    def _ceilings(self) -> None:
        if self.max_cpus is not None and self.max_cpus < self.cpus:
            raise ValueError(f"max_cpus ({self.max_cpus}) is below cpus ({self.cpus})")
        if self.max_memory is not None and self.max_memory < self.memory:
            raise ValueError("max_memory is below memory")

    @check
    def _tart_boot(self) -> None:
        if (self.boot.kind == "tart") != (self.driver == "tart"):
            raise ValueError(
                "boot.kind 'tart' and driver: tart go together (Tart boots only its own VMs)"
            )

    @check
    def _accel_driver(self) -> None:
        if self.accelerator == "hvf" and self.driver in ("cloud-hypervisor",):
            raise ValueError("accelerator 'hvf' is macOS-only; cloud-hypervisor needs kvm")


def spec_from_dict(
    data: Any, *, base_dir: Path | None = None, check_files: bool = True
) -> MachineSpec:
    """Validate `data`; raise SpecError listing every bad field."""
    if not isinstance(data, dict):
        raise SpecError([("", f"a machine spec must be a mapping, not {type(data).__name__}")])
    spec = MachineSpec.parse(data, {"base_dir": base_dir or Path.cwd()})
    if check_files:
        problems = missing_files(spec, creating=True)
        if problems:
            raise SpecError(problems)
    return spec


def missing_files(spec: MachineSpec, creating: bool = False) -> list[tuple[str, str]]:
    """Files the spec names that do not exist or are not what the spec says, and values that
    cannot work on this host (vmkit.input_checks); `creating`: also refuse an existing
    serial_log file (a start reuses the one it made)."""
    from vmkit import input_checks

    problems: list[tuple[str, str]] = []

    def need(field: str, path: Path | None) -> None:
        if path is None:
            return
        try:
            if path.is_file():
                return
            why = "is a directory" if path.is_dir() else "does not exist"
            if path.exists() and not path.is_dir():
                why = "is not a regular file"
        except OSError as exc:  # e.g. a name component longer than 255 bytes
            why = f"cannot be used ({exc.strerror})"
        problems.append((field, f"{str(path)!r} {why}"))

    if isinstance(spec.boot, LinuxBoot):
        need("boot.kernel", spec.boot.kernel)
        need("boot.initrd", spec.boot.initrd)
        if not problems and (why := input_checks.kernel_problem(spec.boot.kernel)):
            problems.append(("boot.kernel", why))
    elif isinstance(spec.boot, MacosBoot):
        need("boot.machine_identifier", spec.boot.machine_identifier)
        need("boot.hardware_model", spec.boot.hardware_model)
        need("boot.aux_image", spec.boot.aux_image)
    elif isinstance(spec.boot, TinyBoot):
        need("boot.initrd", spec.boot.initrd)
    elif isinstance(spec.boot, EfiBoot) and spec.boot.firmware is not None:
        need("boot.firmware", spec.boot.firmware)
    for i, disk in enumerate(spec.disks):
        need(f"disks[{i}].clone", disk.clone if disk.path is None else None)
        if disk.path is None:
            continue
        if not (disk.force and disk.path.exists()):
            need(f"disks[{i}].path", disk.path)
        if why := input_checks.disk_problem(disk.path, disk.readonly, disk.force):
            problems.append((f"disks[{i}].path", why))
        elif disk.path.is_file() and disk.format == "raw" and sniff_format(disk.path) == "qcow2":
            problems.append(
                (
                    f"disks[{i}].format",
                    f"{str(disk.path)!r} is a qcow2 image; set format: qcow2",
                )
            )
    for i, share in enumerate(spec.shares):
        if not share.host.is_dir():
            why = "is a file, not a directory" if share.host.exists() else "does not exist"
            problems.append((f"shares[{i}].host", f"{str(share.host)!r} {why}"))
    tags = [share.tag for share in spec.shares]
    for tag in sorted({t for t in tags if tags.count(t) > 1}):
        problems.append(("shares", f"tag {tag!r} is used twice; each share needs its own tag"))
    if spec.serial_log is not None and (
        why := input_checks.serial_log_problem(spec.serial_log, creating)
    ):
        problems.append(("serial_log", why))
    for where, value in (("memory", spec.memory), ("max_memory", spec.max_memory)):
        if value is not None and (why := input_checks.memory_problem(value)):
            problems.append((where, why))
    problems += input_checks.duplicate_ports(
        [
            (f"networks[{i}].publish", item, *parse_publish(item)[1:4:2])
            for i, net in enumerate(spec.networks)
            for item in net.publish
        ]
    )
    return problems


MAX_SPEC_BYTES = 1 << 20


def _read_spec_text(path: Path) -> str:
    """The file's text: a regular file (never blocks on a FIFO), at most 1 MiB, UTF-8."""
    import os
    import stat

    def bad(why: str) -> SpecError:
        return SpecError([("", f"spec file {str(path)!r} {why}")])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SpecError([("", f"cannot read spec file {str(path)!r}: {exc.strerror}")]) from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise bad("is not a regular file (a device, FIFO or folder); give a YAML/JSON file")
        try:
            data = f.read(MAX_SPEC_BYTES + 1)
        except OSError as exc:
            raise bad(f"cannot be read: {exc.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise bad(f"is larger than {MAX_SPEC_BYTES >> 20} MiB; a spec is a small YAML/JSON file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def load_spec_file(path: Path, overrides: dict[str, Any] | None = None) -> MachineSpec:
    """A spec from a YAML or JSON file; `overrides` (e.g. from CLI flags) win."""
    text = _read_spec_text(path)
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, ImportError) as exc:
        raise SpecError([("", f"{path} is not valid YAML/JSON: {exc}")]) from None
    except Exception as exc:  # yaml.YAMLError has no common base we can import lazily
        raise SpecError([("", f"{path} is not valid YAML/JSON: {exc}")]) from None
    if data is None:
        data = {}
    if isinstance(data, dict) and overrides:
        merged = {**data}
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}  # e.g. --timeout keeps the file's marker
            else:
                merged[key] = value
        data = merged
    return spec_from_dict(data, base_dir=path.parent.absolute())


def size_help() -> str:
    return SIZE_HELP
