"""TAP devices through netlink (pyroute2), optionally inside a named network namespace and
enslaved to a bridge. vmkit opens the TAP itself and hands QEMU the file descriptor, so the
VMM needs no privileges and can use a TAP that lives in another namespace. Only TAPs vmkit
created are deleted when the VM stops; an existing TAP of that name is reused and kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vmkit.errors import InvalidInput, VmkitError

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")


def _ipr(netns: str | None) -> Any:
    from pyroute2 import IPRoute, NetNS

    if netns is None:
        return IPRoute()
    if not (NETNS_DIR / netns).exists():
        raise InvalidInput(
            f"network namespace {netns!r} does not exist; create it with `ip netns add {netns}`"
        )
    return NetNS(netns)


@contextmanager
def _in_netns(netns: str | None) -> Iterator[None]:
    """Run the block with this thread in `netns` (TUNSETIFF looks the name up there)."""
    if netns is None:
        yield
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise VmkitError(f"cannot enter network namespace {netns!r}: {os.strerror(err)}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - cannot recover
                raise VmkitError("cannot return to vmkit's own network namespace")
    finally:
        os.close(target)
        os.close(home)


def open_tap(name: str, netns: str | None = None, bridge: str | None = None) -> tuple[int, bool]:
    """(an fd attached to TAP `name`, whether vmkit created it). The fd is inheritable."""
    created = False
    with _ipr(netns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            try:
                ipr.link("add", ifname=name, kind="tuntap", mode="tap")
            except Exception as exc:
                raise VmkitError(
                    f"cannot create TAP {name!r}"
                    + (f" in namespace {netns!r}" if netns else "")
                    + f": {exc} (creating TAPs needs root or CAP_NET_ADMIN)"
                ) from None
            created = True
            found = ipr.link_lookup(ifname=name)
        index = found[0]
        if bridge is not None:
            master = ipr.link_lookup(ifname=bridge)
            if not master:
                if created:
                    ipr.link("del", index=index)
                raise InvalidInput(
                    f"bridge {bridge!r} does not exist" + (f" in {netns!r}" if netns else "")
                )
            ipr.link("set", index=index, master=master[0])
        ipr.link("set", index=index, state="up")
    try:
        with _in_netns(netns):
            fd = os.open("/dev/net/tun", os.O_RDWR)
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
            except OSError as exc:
                os.close(fd)
                raise VmkitError(f"cannot attach to TAP {name!r}: {exc.strerror}") from None
    except BaseException:
        if created:
            delete_tap(name, netns)
        raise
    os.set_inheritable(fd, True)
    return fd, created


HOTPLUG_NEEDS_EXISTING = "create it first (a hot-plugged NIC uses an existing TAP)"


def open_existing_tap(
    name: str, netns: str | None = None, bridge: str | None = None, why: str = ""
) -> int:
    """An fd on TAP `name`, which must exist already (`why`: the fix to name if not):
    a TAP vmkit made here would outlive the NIC, so none is made."""
    fd, created = open_tap(name, netns, bridge)
    if created:
        os.close(fd)
        delete_tap(name, netns)
        where = f" in network namespace {netns!r}" if netns else ""
        raise VmkitError(f"TAP {name!r}{where} does not exist: {why or HOTPLUG_NEEDS_EXISTING}")
    return fd


def delete_tap(name: str, netns: str | None = None) -> None:
    try:
        with _ipr(netns) as ipr:
            for index in ipr.link_lookup(ifname=name):
                ipr.link("del", index=index)
    except InvalidInput:
        pass  # the namespace is gone, and the TAP with it
