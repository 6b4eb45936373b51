"""Name rules (VMs, network interfaces), kept apart from the spec so path-handling code need
not import the spec layer."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,62}\Z")
NAME_HELP = (
    "1-63 characters: lowercase letters, digits, '-', '_' and '.', not starting with '.' or '-'"
)


def validate_name(name: str) -> str:
    """A VM name safe to use as a path component; ValueError says what is allowed."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a valid name; use {NAME_HELP}")
    return name


IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")


def check_ifname(name: str) -> str:
    """A Linux network interface name (TAP, bridge); ValueError says what is allowed."""
    if not IFNAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not an interface name; use 1-15 letters, digits or '_.-'")
    return name
