"""What a driver can do: `Capabilities` (declared per driver, the verbs derived from its
Control's abilities: drivers/abilities.py) and the words docs/capabilities.md uses.

A plain class, not a dataclass: a running VM's `vmkit ls` imports its driver, and importing
`dataclasses` and building the classes cost it ~20 ms (plain.py)."""

from __future__ import annotations

from vmkit.plain import Frozen


class Capabilities(Frozen):
    """What a driver can do. `docs/capabilities.md` is generated from these declarations.
    Made with keywords; a capability not named is False."""

    boot_linux: bool
    boot_efi: bool
    boot_macos: bool
    boot_oci: bool
    arch_emulation: bool
    rosetta: bool
    disk_raw: bool
    disk_qcow2: bool
    disk_clone: bool
    cloud_init: bool
    net_none: bool
    net_user: bool
    net_switch: bool
    net_vmnet: bool
    publish: bool
    shares: bool
    net_tap: bool
    rng: bool
    balloon: bool
    graceful_stop: bool
    kill: bool
    console: bool
    readiness: bool
    readopt: bool
    crash_detection: bool
    pause: bool
    snapshot: bool
    restore_readiness: bool
    hotplug_disk: bool
    hotplug_net: bool
    hotplug_share: bool
    migrate: bool
    reboot: bool
    resize: bool
    counters: bool
    guest_exec: bool
    guest_copy: bool

    _fields = (
        "boot_linux",
        "boot_efi",
        "boot_macos",
        "boot_oci",
        "arch_emulation",
        "rosetta",
        "disk_raw",
        "disk_qcow2",
        "disk_clone",
        "cloud_init",
        "net_none",
        "net_user",
        "net_switch",
        "net_vmnet",
        "publish",
        "shares",
        "net_tap",
        "rng",
        "balloon",
        "graceful_stop",
        "kill",
        "console",
        "readiness",
        "readopt",
        "crash_detection",
        "pause",
        "snapshot",
        "restore_readiness",
        "hotplug_disk",
        "hotplug_net",
        "hotplug_share",
        "migrate",
        "reboot",
        "resize",
        "counters",
        "guest_exec",
        "guest_copy",
    )
    __slots__ = _fields

    def __init__(self, **declared: bool):
        unknown = sorted(set(declared) - set(self._fields))
        if unknown:
            raise TypeError(f"Capabilities has no {', '.join(unknown)}")
        for name in self._fields:
            object.__setattr__(self, name, bool(declared.get(name, False)))

    @classmethod
    def names(cls) -> list[str]:
        return list(cls._fields)

    def replace(self, **changes: bool) -> Capabilities:
        return Capabilities(**{**self.as_dict(), **changes})


# Capabilities that are verbs on a running VM: derived from the ability protocols a
# driver's Control implements (drivers/abilities.py), never declared by hand.
DERIVED = (
    "pause",
    "reboot",
    "snapshot",
    "restore_readiness",
    "hotplug_disk",
    "hotplug_net",
    "hotplug_share",
    "migrate",
    "resize",
    "counters",
)


CAPABILITY_TEXT = {
    "boot_linux": "Direct Linux boot (kernel + initrd + cmdline)",
    "boot_efi": "EFI firmware boot from a disk image",
    "boot_macos": "macOS guests (Apple silicon), at most 2 running per Mac, checked first",
    "boot_oci": "VM images cloned from OCI registries (Tart: `boot: {kind: tart, image: REF}`)",
    "disk_raw": "Raw disk images (read-write and read-only)",
    "disk_qcow2": "qcow2 disk images",
    "disk_clone": "VM-owned disks: new (`size:`) or CoW clones (`clone:`), made at create",
    "cloud_init": "cloud-init NoCloud seed ISO built from the spec (pycdlib), attached read-only",
    "net_none": "No network",
    "net_user": "NAT networking through the hypervisor (QEMU user)",
    "net_switch": "VMs on vmkit's userspace L2 switch (`--net switch:NAME`), no root needed",
    "net_vmnet": "macOS vmnet networks (`--net vmnet:shared`, `host`, `bridged:IF`)",
    "net_tap": "TAP NICs (Linux), optionally in a named netns or on a bridge (`--net tap:IF@NS`)",
    "shares": "Shared host folders over virtio-fs, read-only enforced (`--share`)",
    "publish": "Published ports: host 127.0.0.1:PORT forwarded to the guest (`--publish`)",
    "rng": "virtio-rng entropy device",
    "balloon": "virtio-balloon device",
    "graceful_stop": "Graceful stop: ACPI power button, then SIGTERM, then SIGKILL",
    "kill": "Immediate kill (SIGKILL)",
    "console": "Interactive serial console attach",
    "readiness": "Readiness line on the serial console, with timeout and log tails",
    "readopt": "A second vmkit process sees and controls a running VM",
    "crash_detection": "A VMM that died behind vmkit's back is shown failed, with the reason",
    "pause": "Pause / resume",
    "snapshot": "Snapshot (memory + device state + disk clones) and restore into new VMs",
    "restore_readiness": "A restored VM announces readiness again",
    "rosetta": "Rosetta shared with Linux guests for x86_64 binaries (Apple silicon, `rosetta:`)",
    "arch_emulation": "Guests of another CPU architecture, emulated (`arch:`: arm64 on x86_64)",
    "hotplug_disk": "Disk hotplug / unplug on a running VM",
    "hotplug_net": "NIC hotplug / unplug on a running VM",
    "hotplug_share": "virtio-fs share hotplug / unplug on a running VM",
    "migrate": "Local live migration between two VMM processes",
    "reboot": "Reboot a running guest",
    "resize": "Resize vCPUs and memory of a running VM (up to max_cpus / max_memory)",
    "counters": "Per-device I/O counters of a running VM",
    "guest_exec": "Commands in the guest over SSH with a pinned host key (`vmkit ssh`/`exec`)",
    "guest_copy": "Files and folders in and out of the guest (`vmkit cp`)",
}
