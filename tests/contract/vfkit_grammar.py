"""vfkit's (and krunkit's) command-line grammar as documented (../shared/reference/vfkit.md),
written as an independent parser so the driver's argv is checked against the grammar, not
against itself. Used by the contract tests and by the REST test double to refuse argv that
vfkit would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class GrammarError(ValueError):
    pass


# type -> (keys taking a value, bare keys); None means "no options at all"
DEVICE_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "virtio-blk": ({"path", "deviceId", "type"}, set()),
    "nvme": ({"path"}, set()),
    "usb-mass-storage": ({"path"}, {"readonly"}),
    "nbd": ({"uri", "timeout", "sync"}, set()),
    "virtio-net": (
        {"mac", "unixSocketPath", "fd", "type", "path", "offloading", "vfkitMagic"},
        {"nat"},
    ),
    "virtio-fs": ({"sharedDir", "mountTag"}, set()),
    "rosetta": ({"mountTag"}, {"install", "ignore-if-missing"}),
    "virtio-serial": ({"logFilePath"}, {"stdio", "pty"}),
    "virtio-vsock": ({"port", "socketURL"}, {"listen", "connect"}),
    "virtio-rng": (set(), set()),
    "virtio-balloon": (set(), set()),
    "virtio-gpu": ({"width", "height"}, set()),
    "virtio-input": (set(), {"keyboard", "pointing"}),
}
# krunkit (containers/krunkit src/virtio.rs): fewer device types, qcow2 `format=`, no NAT,
# and every option split on every `=` (a value containing `=` is refused).
KRUNKIT_DEVICE_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "virtio-blk": ({"path", "format"}, set()),
    "virtio-net": ({"mac", "unixSocketPath", "fd", "type", "path", "offloading", "vfkitMagic"},
                   set()),
    "virtio-fs": ({"sharedDir", "mountTag"}, set()),
    "virtio-serial": ({"logFilePath"}, set()),
    "virtio-vsock": ({"port", "socketURL"}, {"listen", "connect"}),  # connect: PR #87
    "virtio-rng": (set(), set()),
    "virtio-gpu": ({"width", "height"}, set()),
    "virtio-input": (set(), {"keyboard", "pointing"}),
}  # fmt: skip
REQUIRED = {
    "virtio-blk": {"path"},
    "nvme": {"path"},
    "usb-mass-storage": {"path"},
    "nbd": {"uri"},
    "virtio-fs": {"sharedDir"},
    "rosetta": {"mountTag"},
    "virtio-vsock": {"port", "socketURL"},
}
VALUE_FLAGS = {
    "--cpus",
    "--memory",
    "--bootloader",
    "--device",
    "--restful-uri",
    "--pidfile",
    "--cloud-init",
    "--ignition",
    "--timesync",
    "--log-level",
}
BARE_FLAGS = {"--gui", "--nested"}


@dataclass
class ParsedDevice:
    kind: str
    options: list[tuple[str, str | None]]

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.options if k == key), None)

    def has(self, key: str) -> bool:
        return any(k == key for k, _ in self.options)


@dataclass
class ParsedArgv:
    binary: str
    cpus: int = 1
    memory: int = 512
    bootloader: tuple[str, dict[str, str | None]] | None = None
    devices: list[ParsedDevice] = field(default_factory=list)
    restful_uri: str = "none://"
    pidfile: str | None = None


def split_bootloader(text: str) -> list[str]:
    """Split on commas outside double quotes; the quotes themselves are removed."""
    parts, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if quoted:
        raise GrammarError(f"unbalanced quote in --bootloader {text!r}")
    parts.append("".join(cur))
    return parts


def parse_bootloader(text: str) -> tuple[str, dict[str, str | None]]:
    kind, *rest = split_bootloader(text)
    opts: dict[str, str | None] = {}
    for token in rest:
        key, eq, val = token.partition("=")
        opts[key] = val if eq else None
    allowed = {
        "linux": ({"kernel", "initrd", "cmdline"}, {"kernel"}),
        "efi": ({"variable-store", "create"}, {"variable-store"}),
        "macos": (
            {"machineIdentifierPath", "hardwareModelPath", "auxImagePath"},
            {"machineIdentifierPath", "hardwareModelPath", "auxImagePath"},
        ),
    }
    if kind not in allowed:
        raise GrammarError(f"unknown bootloader {kind!r}")
    keys, required = allowed[kind]
    unknown = set(opts) - keys
    if unknown:
        raise GrammarError(f"unknown {kind} bootloader options {sorted(unknown)}")
    missing = required - set(opts)
    if missing:
        raise GrammarError(f"{kind} bootloader needs {sorted(missing)}")
    if kind == "efi" and opts.get("create") is not None:
        raise GrammarError("efi 'create' is a bare flag")
    return kind, opts


def parse_device(text: str, flavor: str = "vfkit") -> ParsedDevice:
    kind, *tokens = text.split(",")  # every comma: vfkit has no quoting here
    table = KRUNKIT_DEVICE_KEYS if flavor == "krunkit" else DEVICE_KEYS
    if kind not in table:
        raise GrammarError(f"unknown {flavor} device type {kind!r}")
    valued, bare = table[kind]
    options: list[tuple[str, str | None]] = []
    for token in tokens:
        if not token:
            raise GrammarError(f"empty option in {text!r}")
        if flavor == "krunkit" and token.count("=") > 1:
            raise GrammarError(f"krunkit splits on every '=': {token!r} in {text!r}")
        key, eq, val = token.partition("=")
        if key in bare:
            if eq:
                raise GrammarError(f"{kind} option {key!r} takes no value")
            options.append((key, None))
        elif key in valued:
            if not eq or not val:
                raise GrammarError(f"{kind} option {key!r} needs a value")
            options.append((key, val))
        else:
            raise GrammarError(f"unknown option {key!r} for {kind} in {text!r}")
    dev = ParsedDevice(kind, options)
    missing = REQUIRED.get(kind, set()) - {k for k, _ in options}
    if missing:
        raise GrammarError(f"{kind} needs {sorted(missing)}")
    _check_device(dev, flavor)
    return dev


def _check_net(dev: ParsedDevice, flavor: str) -> None:
    """vfkit (pkg/config FromOptions): type is only `unixgram`; path=/offloading= need
    type=; offloading only `off`. krunkit: unixgram|unixstream, offloading on|off,
    vfkitMagic only with unixgram, and a mac= always."""
    modes = [k for k in ("nat", "unixSocketPath", "fd", "type") if dev.has(k)]
    if len(modes) != 1:
        raise GrammarError(f"virtio-net needs exactly one of nat/unixSocketPath/fd/type: {modes}")
    types = ("unixgram", "unixstream") if flavor == "krunkit" else ("unixgram",)
    if dev.has("type") and (dev.get("type") not in types or not dev.has("path")):
        raise GrammarError(f"virtio-net type= needs one of {types} and path=")
    for key in ("path", "offloading"):
        if dev.has(key) and not dev.has("type"):
            raise GrammarError(f"virtio-net {key}= needs type=")
    offload = ("on", "off") if flavor == "krunkit" else ("off",)
    if dev.has("offloading") and dev.get("offloading") not in offload:
        raise GrammarError(f"virtio-net offloading must be one of {offload}")
    if dev.has("vfkitMagic") and dev.get("vfkitMagic") not in ("on", "off"):
        raise GrammarError("virtio-net vfkitMagic must be on or off")
    if flavor == "krunkit":
        if dev.has("vfkitMagic") and dev.get("type") != "unixgram":
            raise GrammarError("krunkit takes vfkitMagic only with type=unixgram")
        if not dev.has("mac"):
            raise GrammarError("krunkit's virtio-net needs mac=")


def _check_device(dev: ParsedDevice, flavor: str = "vfkit") -> None:
    if dev.kind == "virtio-net":
        _check_net(dev, flavor)
        mac = dev.get("mac")
        if mac is not None:
            octets = mac.split(":")
            if len(octets) != 6 or any(len(o) != 2 for o in octets):
                raise GrammarError(f"bad MAC {mac!r}")
            int(mac.replace(":", ""), 16)
    if dev.kind == "virtio-serial":
        modes = [k for k in ("logFilePath", "stdio", "pty") if dev.has(k)]
        if len(modes) != 1:
            raise GrammarError("virtio-serial needs exactly one of logFilePath/stdio/pty")
    if dev.kind == "virtio-vsock":
        port = dev.get("port") or ""
        if not port.isdigit() or int(port) == 0:
            raise GrammarError(f"virtio-vsock port {port!r} is not a positive number")
        if dev.has("listen") and dev.has("connect"):
            raise GrammarError("virtio-vsock: listen and connect are exclusive")
    if dev.kind == "virtio-input" and len(dev.options) != 1:
        raise GrammarError("virtio-input needs exactly one of keyboard/pointing")
    for key in ("path", "logFilePath", "sharedDir", "socketURL", "unixSocketPath"):
        val = dev.get(key)
        if val is not None and not val.startswith("/"):
            raise GrammarError(f"{dev.kind} {key} must be an absolute path: {val!r}")


def parse_argv(argv: list[str], flavor: str = "vfkit") -> ParsedArgv:
    out = ParsedArgv(argv[0])
    i = 1
    while i < len(argv):
        flag = argv[i]
        if flag in BARE_FLAGS:
            i += 1
            continue
        if flag not in VALUE_FLAGS:
            raise GrammarError(f"unknown flag {flag!r}")
        if i + 1 >= len(argv):
            raise GrammarError(f"{flag} needs a value")
        val = argv[i + 1]
        i += 2
        if flag in ("--cpus", "--memory"):
            if not val.isdigit() or int(val) < 1:
                raise GrammarError(f"{flag} {val!r} is not a positive number")
            setattr(out, flag[2:], int(val))
        elif flag == "--bootloader":
            if out.bootloader is not None:
                raise GrammarError("--bootloader given twice")
            out.bootloader = parse_bootloader(val)
        elif flag == "--device":
            out.devices.append(parse_device(val, flavor))
        elif flag == "--restful-uri":
            if not (val.startswith(("unix:///", "tcp://")) or val == "none://"):
                raise GrammarError(f"bad --restful-uri {val!r}")
            out.restful_uri = val
        elif flag == "--pidfile":
            out.pidfile = val
    if out.bootloader is None:
        raise GrammarError("a --bootloader is required")
    return out
