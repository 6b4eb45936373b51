"""The spec's device models (disks, NICs, shares, cloud-init, CPU topology) and the base
model every spec part shares; `vmkit.spec` re-exports them."""

from __future__ import annotations

import datetime
import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vmkit import optstr
from vmkit.errors import SpecError
from vmkit.names import validate_name
from vmkit.units import parse_size


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    why = optstr.problem(str(value), optstr.CONTROL, "vmkit", optstr.PLAIN_FIX)
    if why is not None:
        raise ValueError(why)
    value = value.expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value.absolute()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Disk(_Model):
    """An existing image (`path`), or one vmkit makes in the VM's dir at create time and
    deletes with the VM: an empty disk of `size`, or a copy-on-write clone of `clone`."""

    path: Path | None = None
    size: int | None = Field(default=None, description="make an empty disk of this size")
    clone: Path | None = Field(default=None, description="make a CoW clone of this image")
    readonly: bool = False
    format: Literal["raw", "qcow2"] = "raw"
    iops: int | None = Field(default=None, gt=0, description="I/O operations per second cap")
    bandwidth: int | None = Field(default=None, description="bytes per second cap (e.g. 50M)")
    force: bool = Field(
        default=False,
        description="use `path` even if it is a device, another user's file, hard-linked or a "
        "system file (refused otherwise)",
    )

    @field_validator("bandwidth", mode="before")
    @classmethod
    def _bandwidth(cls, v: Any) -> int | None:
        if v is None:
            return None
        n = parse_size(v)
        if n <= 0:
            raise ValueError(f"{v!r} must be a positive number of bytes per second")
        return n

    @field_validator("path", "clone")
    @classmethod
    def _path(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else _resolve(v, info)

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int | None:
        if v is None:
            return None
        n = parse_size(v)
        if n <= 0 or n % 512:
            raise ValueError(f"{v!r} must be a positive size in whole 512-byte sectors")
        return n

    @model_validator(mode="after")
    def _source(self) -> Disk:
        if self.size is not None and self.clone is not None:
            raise ValueError("give `size` (a new empty disk) or `clone` (a copy), not both")
        if self.path is None and self.size is None and self.clone is None:
            raise ValueError("a disk needs `path`, `size` (new empty disk) or `clone` (copy)")
        return self

    @property
    def file(self) -> Path:
        """The image file (made at create time for `size`/`clone` disks)."""
        if self.path is None:
            raise SpecError([("disks", "this disk has not been made yet (vmkit create does it)")])
        return self.path


class Network(_Model):
    """A NIC. `user`/`nat`: NAT through the hypervisor (QEMU user networking); `switch`: a
    port on vmkit's userspace L2 switch named `switch` (VMs on one switch share a LAN)."""

    mode: Literal["none", "user", "nat", "switch", "tap", "vmnet"] = "user"
    switch: str | None = Field(default=None, description="switch name (mode: switch)")
    tap: str | None = Field(default=None, description="TAP name (mode: tap); made if missing")
    netns: str | None = Field(default=None, description="network namespace of the TAP")
    bridge: str | None = Field(default=None, description="bridge to enslave the TAP to")
    vmnet: Literal["shared", "host", "bridged"] | None = Field(
        default=None, description="vmnet.framework network through vmnet-helper (macOS)"
    )
    interface: str | None = Field(default=None, description="host interface (vmnet: bridged)")
    mac: str | None = None
    ip: str | None = Field(default=None, description="static guest IP/prefix; else DHCP")
    publish: list[str] = Field(
        default_factory=list,
        description="port forwards HOST_PORT:GUEST_PORT[/tcp|udp] (NAT and TAP NICs)",
    )

    @field_validator("switch")
    @classmethod
    def _switch(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v)

    @field_validator("tap", "bridge", "interface")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        from vmkit.names import check_ifname

        return None if v is None else check_ifname(v)

    @field_validator("netns")
    @classmethod
    def _netns(cls, v: str | None) -> str | None:
        if (v is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v)) or v in (".", ".."):
            raise ValueError(f"{v!r} is not a network namespace name")
        return v

    @field_validator("publish")
    @classmethod
    def _publish(cls, v: list[str]) -> list[str]:
        for item in v:
            parse_publish(item)
        return v

    @model_validator(mode="after")
    def _mode_fields(self) -> Network:
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
        return self

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", v.lower()):
            raise ValueError(
                f"{v!r} is not a MAC address; use six hex pairs like 52:54:00:12:34:56"
            )
        if int(v[:2], 16) & 1:
            raise ValueError(f"{v!r} is a multicast MAC; the first byte must be even")
        return v.lower()

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            iface = ipaddress.ip_interface(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an address with prefix, e.g. 10.0.2.15/24") from None
        return str(iface)


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


class Share(_Model):
    """A host directory the guest mounts over virtio-fs with `mount -t virtiofs TAG DIR`."""

    host: Path
    tag: str
    readonly: bool = False

    @field_validator("host")
    @classmethod
    def _host(cls, v: Path, info: ValidationInfo) -> Path:
        v = _resolve(v, info)
        why = optstr.problem(str(v), optstr.VIRTIOFSD, optstr.VIRTIOFSD_WHO, optstr.VIRTIOFSD_FIX)
        if why is not None:  # `-o source=/a,source=/` would share another folder
            raise ValueError(why)
        return v

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if not TAG_RE.match(v):
            raise ValueError(
                f"{v!r} is not a usable tag; use 1-36 letters, digits or '_.-', "
                "starting with a letter or digit"
            )
        return v


class CloudInit(_Model):
    """A cloud-init NoCloud seed ISO vmkit builds and attaches read-only (for cloud images)."""

    hostname: str | None = None
    user: str = "vmkit"
    shell: str | None = Field(
        default=None, description="login shell, e.g. /bin/bash (default: the image's)"
    )
    ssh_authorized_keys: list[str] = Field(
        default_factory=list, description="added to vmkit's own per-host key (`vmkit ssh`)"
    )
    sudo: bool = Field(default=True, description="password-less sudo for the user")
    packages: list[str] = Field(default_factory=list)
    runcmd: list[str | list[str]] = Field(default_factory=list)
    user_data: dict[str, Any] = Field(
        default_factory=dict,
        description="merged into #cloud-config: mappings recursively, lists appended, "
        "other values replace vmkit's",
    )
    network_config: dict[str, Any] | None = None
    ready_line: bool = Field(default=True, description="print the readiness line when done")

    @field_validator("user_data", "network_config")
    @classmethod
    def _plain(cls, v: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        _plain_data(v, str(info.field_name))
        return v

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", v):
            raise ValueError(f"{v!r} is not a hostname; use lowercase letters, digits and '-'")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v):
            raise ValueError(f"{v!r} is not a Linux user name")
        return v

    @field_validator("shell")
    @classmethod
    def _shell(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"/[A-Za-z0-9_./+-]+", v):
            raise ValueError(f"{v!r} is not an absolute path to a shell, e.g. /bin/bash")
        return v

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            if "\n" in key.strip() or len(key.split()) < 2:
                raise ValueError(
                    f"{key[:40]!r}... is not one OpenSSH public key line "
                    "(TYPE BASE64 [COMMENT], e.g. the contents of ~/.ssh/id_ed25519.pub)"
                )
        return [key.strip() for key in v]


class CpuTopology(_Model):
    """threads x cores x dies x packages; the product must equal max_cpus (or cpus)."""

    threads_per_core: int = Field(default=1, ge=1)
    cores_per_die: int = Field(default=1, ge=1)
    dies_per_package: int = Field(default=1, ge=1)
    packages: int = Field(default=1, ge=1)

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
    elif not isinstance(value, str | int | float | bool | datetime.date | type(None)):
        raise ValueError(
            f"{where}: a {type(value).__name__} value (e.g. YAML !!binary) cannot go into "
            "cloud-init's YAML; use text"
        )
    return value
