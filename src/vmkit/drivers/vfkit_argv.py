"""vfkit's (and krunkit's) command-line values: `--device` strings in vfkit's canonical
key order, the `--bootloader` forms, the REST URI and the sockets beside vmkit's, each value
escaped or refused by field (vfkit splits `--device` on every comma with no quoting, and
`--bootloader` with a quote-aware splitter; krunkit also on every `=`, see vfkit.py)."""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmkit.drivers.base import LaunchContext
from vmkit.errors import InvalidInput, NotSupported

MAX_SOCKET_PATH = 104  # bytes, sun_path on macOS (including the NUL)
# vfkit binds its end of a unixSocketPath NIC beside the switch socket, named
# `vfkit-<pid hex>-<random hex>.sock` (pkg/vf/virtionet.go): at most this long (pid <= 99999).
VFKIT_LOCAL_SOCKET_NAME = len("vfkit-1869f-ffff.sock")
_FORBIDDEN_IN_VALUES = {",": "a comma", "\n": "a newline", "\0": "a NUL byte"}


# ---- devices and their canonical forms -------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """One `--device` value: the type, then `key=value` or bare-flag options in order."""

    kind: str
    options: tuple[tuple[str, str | None], ...] = ()

    def render(self) -> str:
        parts = [self.kind]
        for key, value in self.options:
            parts.append(key if value is None else f"{key}={value}")
        return ",".join(parts)


def value(field: str, raw: str | Path) -> str:
    """A value vfkit can parse: no comma (vfkit splits on every one), newline or NUL."""
    text = str(raw)
    for char, name in _FORBIDDEN_IN_VALUES.items():
        if char in text:
            hint = (
                " (vfkit splits its options on every comma and has no quoting: rename or "
                "move the file)"
                if char == ","
                else ""
            )
            raise InvalidInput(f"{field}: {text!r} contains {name}; vfkit cannot take it{hint}")
    return text


def virtio_blk(path: Path, device_id: str | None = None, fmt: str | None = None) -> Device:
    opts: list[tuple[str, str | None]] = [("path", value("disk path", path))]
    if device_id is not None:
        opts.append(("deviceId", value("deviceId", device_id)))
    if fmt is not None:
        opts.append(("format", fmt))
    return Device("virtio-blk", tuple(opts))


def usb_mass_storage(path: Path, readonly: bool = False) -> Device:
    opts: list[tuple[str, str | None]] = [("path", value("disk path", path))]
    if readonly:
        opts.append(("readonly", None))
    return Device("usb-mass-storage", tuple(opts))


def nvme(path: Path) -> Device:
    return Device("nvme", (("path", value("disk path", path)),))


def virtio_net_nat(mac: str | None = None) -> Device:
    opts: list[tuple[str, str | None]] = [("nat", None)]
    if mac is not None:
        opts.append(("mac", mac))
    return Device("virtio-net", tuple(opts))


def virtio_net_unix(path: Path, mac: str | None = None) -> Device:
    """vfkit's Ethernet-frames-as-datagrams socket (a userspace switch or gvproxy)."""
    opts: list[tuple[str, str | None]] = [("unixSocketPath", value("network socket", path))]
    if mac is not None:
        opts.append(("mac", mac))
    return Device("virtio-net", tuple(opts))


def virtio_net_unixgram(
    path: Path, mac: str | None = None, offloading: bool = False, vfkit_magic: bool = False
) -> Device:
    """The newer `type=unixgram,path=` form (krunkit's only form; vfkit >= 0.6.1).
    `vfkitMagic=on` (krunkit): send `VFKT` on connect, as vfkit's unixSocketPath does."""
    opts: list[tuple[str, str | None]] = [
        ("type", "unixgram"),
        ("path", value("network socket", path)),
    ]
    if mac is not None:
        opts.append(("mac", mac))
    if offloading:
        opts.append(("offloading", "on"))
    if vfkit_magic:
        opts.append(("vfkitMagic", "on"))
    return Device("virtio-net", tuple(opts))


def virtio_net_fd(fd: int, mac: str | None = None) -> Device:
    opts: list[tuple[str, str | None]] = [("fd", str(fd))]
    if mac is not None:
        opts.append(("mac", mac))
    return Device("virtio-net", tuple(opts))


def virtio_fs(shared_dir: Path, mount_tag: str) -> Device:
    return Device(
        "virtio-fs",
        (
            ("sharedDir", value("shared dir", shared_dir)),
            ("mountTag", value("mount tag", mount_tag)),
        ),
    )


def rosetta(mount_tag: str, install: bool = False, ignore_if_missing: bool = False) -> Device:
    opts: list[tuple[str, str | None]] = [("mountTag", value("mount tag", mount_tag))]
    if install:
        opts.append(("install", None))
    if ignore_if_missing:
        opts.append(("ignore-if-missing", None))
    return Device("rosetta", tuple(opts))


def virtio_serial_log(path: Path) -> Device:
    return Device("virtio-serial", (("logFilePath", value("serial_log", path)),))


def virtio_vsock(port: int, socket_path: Path, listen: bool = True) -> Device:
    if not 1 <= port < 2**32:
        raise InvalidInput(f"vsock port {port} is out of range (1 .. 2^32-1)")
    return Device(
        "virtio-vsock",
        (
            ("port", str(port)),
            ("socketURL", value("vsock socket", socket_path)),
            ("listen" if listen else "connect", None),
        ),
    )


def virtio_rng() -> Device:
    return Device("virtio-rng")


def virtio_balloon() -> Device:
    return Device("virtio-balloon")


def boot_value(field: str, raw: str | Path) -> str:
    """A value inside `--bootloader`, which vfkit splits with a quote-aware splitter (every
    `"` toggles quoting, pkg/cmdline): a `"` in a path would shift or swallow the fields
    after it, so it is refused like a comma."""
    text = value(field, raw)
    if '"' in text:
        raise InvalidInput(
            f"{field}: {text!r} contains a double quote; vfkit's --bootloader reads it as "
            "quoting and would see a different path (rename or move the file)"
        )
    return text


def linux_bootloader(kernel: Path, initrd: Path | None, cmdline: str) -> str:
    """`linux,kernel=,initrd=,cmdline="..."`: the quotes protect commas in the cmdline."""
    if '"' in cmdline:
        raise InvalidInput(
            "boot.cmdline: vfkit reads the command line between double quotes, so it cannot "
            'contain a `"`'
        )
    parts = ["linux", f"kernel={boot_value('boot.kernel', kernel)}"]
    if initrd is not None:
        parts.append(f"initrd={boot_value('boot.initrd', initrd)}")
    parts.append(f'cmdline="{cmdline}"')  # the spec already refused newlines and NULs
    return ",".join(parts)


def efi_bootloader(variable_store: Path, create: bool = True) -> str:
    """`create` makes Virtualization.framework write a fresh store, overwriting an existing
    one (and the boot entries a guest wrote): ask for it only when there is none yet."""
    out = f"efi,variable-store={boot_value('EFI variable store', variable_store)}"
    return out + (",create" if create else "")


def macos_bootloader(boot: Any) -> str:
    """`macos,machineIdentifierPath=…,hardwareModelPath=…,auxImagePath=…` (vfkit's order)."""
    return (
        "macos,machineIdentifierPath="
        f"{boot_value('boot.machine_identifier', boot.machine_identifier)}"
        f",hardwareModelPath={boot_value('boot.hardware_model', boot.hardware_model)}"
        f",auxImagePath={boot_value('boot.aux_image', boot.aux_image)}"
    )


SSH_VSOCK_PORT = 22
# What Go's url.URL.EscapedPath keeps as is: vfkit's `connect` mode listens on the escaped
# path of `unix://:<socketURL>` (pkg/vf/vsock.go), so any other character moves the socket.
_PLAIN_PATH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-._~+@:=")


GUEST_CID = 3  # Virtualization.framework and libkrun give the guest this CID; not settable


def check_vsock(vmm: str, cid: int | None, macos_guest: bool) -> None:
    """`vsock_cid` says the guest serves SSH on vsock port 22 (systemd >= 256 does): the
    driver then adds a `virtio-vsock,port=22,...,connect` device. The CID itself is the
    VMM's choice here, so only the one it gives is accepted."""
    if cid is None:
        return
    if macos_guest:
        raise NotSupported(
            "vsock_cid: a macOS guest has no SSH server on vsock; remove vsock_cid "
            "(vmkit reaches it over the network)"
        )
    if cid != GUEST_CID:
        raise InvalidInput(
            f"vsock_cid: {vmm} gives the guest CID {GUEST_CID} itself and cannot set another; "
            f"use vsock_cid: {GUEST_CID} (or remove it)"
        )


def ssh_vsock_socket(ctx: LaunchContext) -> Path:
    """Where vfkit (`connect` mode) listens for host connections to the guest's vsock port
    22: beside the REST socket, refused when macOS or vfkit's URL handling cannot take it."""
    rest = ctx.sockets["rest"]
    path = rest.with_name(f"{rest.stem}.vs{SSH_VSOCK_PORT}")
    raw = os.fsencode(path)
    if len(raw) >= MAX_SOCKET_PATH:
        raise InvalidInput(
            f"vsock_cid: the vsock socket {path} is {len(raw)} bytes; macOS allows at most "
            f"{MAX_SOCKET_PATH - 1}: set VMKIT_RUNTIME_DIR to a shorter directory"
        )
    odd = sorted(set(str(path)) - _PLAIN_PATH)
    if odd:
        raise InvalidInput(
            f"vsock_cid: the vsock socket {path} has characters vfkit would URL-escape "
            f"({''.join(odd)!r}) and then listen elsewhere: set VMKIT_RUNTIME_DIR to a plain "
            "directory"
        )
    return path


def switch_socket(ctx: LaunchContext, switch: str) -> Path:
    """The switch's socket, refused when vfkit's own end beside it would be too long."""
    return _peer_socket(ctx.switch_sockets[switch], f"switch {switch!r}")


def vmnet_socket(ctx: LaunchContext, index: int) -> Path:
    """Where NIC `index`'s vmnet-helper binds (net/vmnet), beside the REST socket."""
    rest = ctx.sockets["rest"]
    return _peer_socket(rest.with_name(f"{rest.stem}.vn{index}"), f"networks[{index}] (vmnet)")


def _peer_socket(path: Path, what: str) -> Path:
    longest = len(os.fsencode(path.parent)) + 1 + VFKIT_LOCAL_SOCKET_NAME
    if longest >= MAX_SOCKET_PATH:
        raise InvalidInput(
            f"{what}: its socket folder {path.parent} is too long for macOS "
            f"sockets (vfkit binds its end there; {longest} >= {MAX_SOCKET_PATH} bytes): set "
            "VMKIT_RUNTIME_DIR to a shorter directory"
        )
    return path


def restful_uri(socket_path: Path) -> str:
    """`unix:///abs/path`, refusing paths over macOS's 104-byte sun_path. vfkit reads it
    with Go's url.ParseRequestURI, which decodes `%XX` and stops the path at `?`: the path
    is percent-encoded so vfkit listens exactly there."""
    raw = os.fsencode(socket_path)
    if len(raw) >= MAX_SOCKET_PATH:
        raise InvalidInput(
            f"REST socket path {socket_path} is {len(raw)} bytes; macOS allows at most "
            f"{MAX_SOCKET_PATH - 1}: set VMKIT_RUNTIME_DIR to a shorter directory"
        )
    if not socket_path.is_absolute():
        raise InvalidInput(f"REST socket path {socket_path} must be absolute")
    if "\0" in str(socket_path):
        raise InvalidInput(f"REST socket path {socket_path!r} contains a NUL byte")
    return "unix://" + urllib.parse.quote(str(socket_path), safe="/")
