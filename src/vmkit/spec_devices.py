"""The spec's device records (disks, NICs, shares, cloud-init, CPU topology) and the path
rule every spec part shares; `vmkit.spec` re-exports them."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from vmkit import optstr
from vmkit.errors import SpecError
from vmkit.names import validate_name
from vmkit.record import (
    BOOL,
    MAPPING,
    PATH,
    STR,
    AnyOf,
    Conv,
    ListOf,
    Maybe,
    Record,
    check,
    conv,
    field,
    integer,
    is_date,
    literal,
    then,
)
from vmkit.units import parse_size


def _resolve(value: Any, ctx: dict[str, Any]) -> Path:
    """A path made absolute against the spec file's folder (`ctx["base_dir"]`), refusing
    control characters that no option string may carry."""
    path: Path = PATH.fn(value, ctx)
    base = ctx.get("base_dir")
    why = optstr.problem(str(path), optstr.CONTROL, "vmkit", optstr.PLAIN_FIX)
    if why is not None:
        raise ValueError(why)
    path = path.expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path.absolute()


RESOLVED_PATH = Conv(_resolve, {"type": "string", "format": "path"})
OPT_PATH = Maybe(RESOLVED_PATH)
OPT_STR = Maybe(STR)
STR_LIST = ListOf(STR)
SIZE_SCHEMA = {"type": ["integer", "string"], "description": "bytes, or a size like 512M or 2G"}


def sized(rule: Any) -> Conv:
    """A size in bytes from an integer or a string like `512M` (units.parse_size), then
    `rule(n, raw)` (raises ValueError)."""

    def run(value: Any) -> int:
        n = parse_size(value)
        rule(n, value)
        return n

    return conv(run, dict(SIZE_SCHEMA))


def _positive_rate(n: int, raw: Any) -> None:
    if n <= 0:
        raise ValueError(f"{raw!r} must be a positive number of bytes per second")


def _sector_size(n: int, raw: Any) -> None:
    if n <= 0 or n % 512:
        raise ValueError(f"{raw!r} must be a positive size in whole 512-byte sectors")


DiskFormat = Literal["raw", "qcow2"]


class Disk(Record):
    """An existing image (`path`), or one vmkit makes in the VM's dir at create time and
    deletes with the VM: an empty disk of `size`, or a copy-on-write clone of `clone`."""

    path: Path | None = field(OPT_PATH, default=None)
    size: int | None = field(
        Maybe(sized(_sector_size)), default=None, doc="make an empty disk of this size"
    )
    clone: Path | None = field(OPT_PATH, default=None, doc="make a CoW clone of this image")
    readonly: bool = field(BOOL, default=False)
    format: DiskFormat = field(literal(DiskFormat), default="raw")
    iops: int | None = field(
        Maybe(integer(gt=0)), default=None, doc="I/O operations per second cap"
    )
    bandwidth: int | None = field(
        Maybe(sized(_positive_rate)), default=None, doc="bytes per second cap (e.g. 50M)"
    )
    force: bool = field(
        BOOL,
        default=False,
        doc="use `path` even if it is a device, another user's file, hard-linked or a "
        "system file (refused otherwise)",
    )

    @check
    def _source(self) -> None:
        if self.size is not None and self.clone is not None:
            raise ValueError("give `size` (a new empty disk) or `clone` (a copy), not both")
        if self.path is None and self.size is None and self.clone is None:
            raise ValueError("a disk needs `path`, `size` (new empty disk) or `clone` (copy)")

    @property
    def file(self) -> Path:
        """The image file (made at create time for `size`/`clone` disks)."""
        if self.path is None:
            raise SpecError([("disks", "this disk has not been made yet (vmkit create does it)")])
        return self.path


def _netns(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v) or v in (".", ".."):
        raise ValueError(f"{v!r} is not a network namespace name")
    return v


def _ifname(v: str) -> str:
    from vmkit.names import check_ifname

    return check_ifname(v)


def _publish(v: str) -> str:
    parse_publish(v)
    return v


def _mac(v: str) -> str:
    if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", v.lower()):
        raise ValueError(f"{v!r} is not a MAC address; use six hex pairs like 52:54:00:12:34:56")
    if int(v[:2], 16) & 1:
        raise ValueError(f"{v!r} is a multicast MAC; the first byte must be even")
    return v.lower()


def _ip(v: str) -> str:
    try:
        return str(ipaddress.ip_interface(v))
    except ValueError:
        raise ValueError(f"{v!r} is not an address with prefix, e.g. 10.0.2.15/24") from None


NetMode = Literal["none", "user", "nat", "switch", "tap", "vmnet"]
VmnetKind = Literal["shared", "host", "bridged"]
IFNAME = Maybe(then(STR, _ifname))


class Network(Record):
    """A NIC. `user`/`nat`: NAT through the hypervisor (QEMU user networking); `switch`: a
    port on vmkit's userspace L2 switch named `switch` (VMs on one switch share a LAN)."""

    mode: NetMode = field(literal(NetMode), default="user")
    switch: str | None = field(
        Maybe(then(STR, validate_name)), default=None, doc="switch name (mode: switch)"
    )
    tap: str | None = field(IFNAME, default=None, doc="TAP name (mode: tap); made if missing")
    netns: str | None = field(
        Maybe(then(STR, _netns)), default=None, doc="network namespace of the TAP"
    )
    bridge: str | None = field(IFNAME, default=None, doc="bridge to enslave the TAP to")
    vmnet: VmnetKind | None = field(
        Maybe(literal(VmnetKind)),
        default=None,
        doc="vmnet.framework network through vmnet-helper (macOS)",
    )
    interface: str | None = field(IFNAME, default=None, doc="host interface (vmnet: bridged)")
    mac: str | None = field(Maybe(then(STR, _mac)), default=None)
    ip: str | None = field(
        Maybe(then(STR, _ip)), default=None, doc="static guest IP/prefix; else DHCP"
    )
    publish: list[str] = field(
        ListOf(then(STR, _publish)),
        factory=list,
        doc="port forwards HOST_PORT:GUEST_PORT[/tcp|udp] (NAT and TAP NICs)",
    )

    @check
    def _mode_fields(self) -> None:
        if self.mode == "switch" and self.switch is None:
            raise ValueError("mode 'switch' needs `switch: NAME` (the LAN to join)")
        if self.mode != "switch" and self.switch is not None:
            raise ValueError(f"`switch` is only for mode 'switch', not {self.mode!r}")
        if self.mode == "tap" and self.tap is None:
            raise ValueError("mode 'tap' needs `tap: IFNAME` (made if it does not exist)")
        if self.mode != "tap" and (self.tap or self.netns or self.bridge):
            raise ValueError(
                f"`tap`, `netns` and `bridge` are only for mode 'tap', not {self.mode!r}"
            )
        if (self.mode == "vmnet") != (self.vmnet is not None):
            raise ValueError("mode 'vmnet' needs `vmnet: shared|host|bridged`, and only it")
        if (self.vmnet == "bridged") != (self.interface is not None):
            raise ValueError("vmnet 'bridged' needs `interface: IF` (e.g. en0), and only it")
        if self.publish and self.mode not in ("user", "nat", "tap"):
            raise ValueError(
                "`publish` needs a NAT or TAP NIC (mode 'nat' or 'tap'); on a switch, reach the IP"
            )
        if self.publish and self.netns is not None:
            raise ValueError(
                "`publish` on a TAP in a network namespace: the host cannot reach the guest there"
            )


PUBLISH_RE = re.compile(
    r"^(?:(?P<host_ip>[0-9.]+):)?(?P<host>\d{1,5}):(?P<guest>\d{1,5})(?:/(?P<proto>tcp|udp))?\Z"
)


def parse_publish(value: str) -> tuple[str, int, int, str]:
    """`[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp]` -> (host_ip, host_port, guest_port, proto).

    The host side binds 127.0.0.1 unless an address is given, like `podman -p`."""
    m = PUBLISH_RE.match(value)
    if not m:
        raise ValueError(
            f"{value!r} is not a port forward; use HOST_PORT:GUEST_PORT[/tcp|udp], "
            "e.g. 8080:80 or 0.0.0.0:2222:22/tcp"
        )
    host_ip = m.group("host_ip") or "127.0.0.1"
    try:
        ipaddress.IPv4Address(host_ip)
    except ValueError:
        raise ValueError(f"{host_ip!r} in {value!r} is not an IPv4 address") from None
    host, guest = int(m.group("host")), int(m.group("guest"))
    for port in (host, guest):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} in {value!r} is out of range; use 1-65535")
    return host_ip, host, guest, m.group("proto") or "tcp"


def network_shorthand(value: str) -> dict[str, Any]:
    """`nat`, `user`, `none`, `switch:NAME`, `tap:IF[@NS]`, `vmnet:shared|host|bridged:IF`."""
    mode, sep, name = value.partition(":")
    if mode == "vmnet" and sep:
        kind, _, interface = name.partition(":")
        return {"mode": "vmnet", "vmnet": kind, **({"interface": interface} if interface else {})}
    if mode == "switch" and sep:
        return {"mode": "switch", "switch": name}
    if mode == "tap" and sep:
        tap, _, netns = name.partition("@")
        return {"mode": "tap", "tap": tap, **({"netns": netns} if netns else {})}
    return {"mode": value}


TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,35}\Z")


def _virtiofs_dir(value: Any, ctx: dict[str, Any]) -> Path:
    path = _resolve(value, ctx)
    why = optstr.problem(str(path), optstr.VIRTIOFSD, optstr.VIRTIOFSD_WHO, optstr.VIRTIOFSD_FIX)
    if why is not None:  # `-o source=/a,source=/` would share another folder
        raise ValueError(why)
    return path


def _tag(v: str) -> str:
    if not TAG_RE.match(v):
        raise ValueError(
            f"{v!r} is not a usable tag; use 1-36 letters, digits or '_.-', "
            "starting with a letter or digit"
        )
    return v


class Share(Record):
    """A host directory the guest mounts over virtio-fs with `mount -t virtiofs TAG DIR`."""

    host: Path = field(Conv(_virtiofs_dir, {"type": "string", "format": "path"}))
    tag: str = field(then(STR, _tag))
    readonly: bool = field(BOOL, default=False)


def _hostname(v: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", v):
        raise ValueError(f"{v!r} is not a hostname; use lowercase letters, digits and '-'")
    return v


def _user(v: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v):
        raise ValueError(f"{v!r} is not a Linux user name")
    return v


def _shell(v: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9_./+-]+", v):
        raise ValueError(f"{v!r} is not an absolute path to a shell, e.g. /bin/bash")
    return v


def _key(key: str) -> str:
    if "\n" in key.strip() or len(key.split()) < 2:
        raise ValueError(
            f"{key[:40]!r}... is not one OpenSSH public key line "
            "(TYPE BASE64 [COMMENT], e.g. the contents of ~/.ssh/id_ed25519.pub)"
        )
    return key.strip()


def plain(where: str) -> Conv:
    """A mapping of plain data only (what JSON can hold); `where` names it in messages."""
    return then(MAPPING, lambda v: _plain_data(v, where))


class CloudInit(Record):
    """A cloud-init NoCloud seed ISO vmkit builds and attaches read-only (for cloud images)."""

    hostname: str | None = field(Maybe(then(STR, _hostname)), default=None)
    user: str = field(then(STR, _user), default="vmkit")
    shell: str | None = field(
        Maybe(then(STR, _shell)),
        default=None,
        doc="login shell, e.g. /bin/bash (default: the image's)",
    )
    ssh_authorized_keys: list[str] = field(
        ListOf(then(STR, _key)),
        factory=list,
        doc="added to vmkit's own per-host key (`vmkit ssh`)",
    )
    sudo: bool = field(BOOL, default=True, doc="password-less sudo for the user")
    packages: list[str] = field(STR_LIST, factory=list)
    runcmd: list[str | list[str]] = field(ListOf(AnyOf(STR, STR_LIST)), factory=list)
    user_data: dict[str, Any] = field(
        plain("user_data"),
        factory=dict,
        doc="merged into #cloud-config: mappings recursively, lists appended, "
        "other values replace vmkit's",
    )
    network_config: dict[str, Any] | None = field(Maybe(plain("network_config")), default=None)
    ready_line: bool = field(BOOL, default=True, doc="print the readiness line when done")


COUNT = integer(ge=1)


class CpuTopology(Record):
    """threads x cores x dies x packages; the product must equal max_cpus (or cpus)."""

    threads_per_core: int = field(COUNT, default=1)
    cores_per_die: int = field(COUNT, default=1)
    dies_per_package: int = field(COUNT, default=1)
    packages: int = field(COUNT, default=1)

    @property
    def total(self) -> int:
        return self.threads_per_core * self.cores_per_die * self.dies_per_package * self.packages


def _plain_data(value: Any, where: str) -> Any:
    """Refuse what YAML can make but JSON cannot hold (`!!binary` bytes, sets, odd keys)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            _plain_data(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain_data(item, f"{where}[{i}]")
    elif not (isinstance(value, str | int | float | bool | type(None)) or is_date(value)):
        raise ValueError(
            f"{where}: a {type(value).__name__} value (e.g. YAML !!binary) cannot go into "
            "cloud-init's YAML; use text"
        )
    return value
