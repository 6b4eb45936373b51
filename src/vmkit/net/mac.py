"""Stable, locally administered MAC addresses, unique within one vmkit store.

52:54:00 is QEMU's customary prefix; 0x52 has the locally-administered bit set and the
multicast bit clear. The rest is a hash of (VM name, NIC index), so a VM keeps its MAC (and
its DHCP lease) across restarts; a collision with another VM in the store is resolved by
re-hashing with a counter when the VM is created, and the result is pinned in its spec.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: a running VM's `vmkit ls` imports this (plain.py)
if TYPE_CHECKING:
    from collections.abc import Iterable


def stable_mac(name: str, index: int, salt: int = 0) -> str:
    """A locally administered MAC (52:54:00 prefix) derived from the VM name and NIC index."""
    key = f"{name}/{index}" if salt == 0 else f"{name}/{index}/{salt}"
    from vmkit.sha import sha256

    digest = sha256(key.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def nic_mac(vm: str, index: int, pinned: str | None) -> str:
    """The MAC of NIC `index` of VM `vm`: the one pinned in its spec (Host pins one for
    every NIC when it records a VM), else the stable one (a spec not recorded yet)."""
    return pinned or stable_mac(vm, index)


def unique_mac(name: str, index: int, used: Iterable[str]) -> str:
    """stable_mac(name, index) unless another NIC already has it; then the next free one."""
    taken = {m.lower() for m in used}
    salt = 0
    while (mac := stable_mac(name, index, salt)) in taken:
        salt += 1
    return mac
