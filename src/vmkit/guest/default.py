"""The default boot: the tiny guest, and the kernel command-line protocol its /init reads.

A spec whose boot is `{kind: tiny}` (the default when a spec names no boot) boots the tiny
guest, built on first use. `guest/init.sh` reads `vmkit.share=TAG` (mount a share),
`vmkit.ip=ADDR/LEN` or `vmkit.dhcp=1` (the first NIC), and `vmkit.marker=TEXT` (the
readiness marker); `resolve_tiny_boot` writes exactly those from the spec, so `Host.run`
from Python and `vmkit run` boot the same guest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vmkit.errors import InvalidInput

if TYPE_CHECKING:
    from vmkit.spec import MachineSpec

DEFAULT_MARKER = "VMKIT_READY"


def tiny_cmdline(spec: MachineSpec, base: str) -> str:
    """`base` (default `quiet`; the driver adds its console=) plus the guest's protocol."""
    cmdline = base or "quiet"
    for share in spec.shares:
        cmdline += f" vmkit.share={share.tag}"
    if spec.networks and spec.networks[0].ip:
        cmdline += f" vmkit.ip={spec.networks[0].ip}"
    elif spec.networks:
        cmdline += " vmkit.dhcp=1"
    if spec.readiness.marker != DEFAULT_MARKER:
        cmdline += f" vmkit.marker={spec.readiness.marker}"
    return cmdline


def resolve_tiny_boot(
    spec: MachineSpec, progress: Callable[[str], None] | None = None
) -> MachineSpec:
    """`spec` with a `tiny` boot turned into the Linux boot of the built tiny guest (built
    now if it is not, reporting to `progress`); any other spec as it is."""
    from vmkit.guest.apt import debian_arch_name
    from vmkit.guest.cache import find_built
    from vmkit.spec import LinuxBoot, TinyBoot

    if not isinstance(spec.boot, TinyBoot):
        return spec
    arch = spec.arch
    if arch not in ("auto", "x86_64", "aarch64"):
        raise InvalidInput(f"arch: {arch!r} is not one of auto, x86_64 (amd64), aarch64 (arm64)")
    wanted = debian_arch_name(arch) if arch != "auto" else None  # None: the host's
    guest = find_built(arch=wanted)
    if guest is None:
        flag = f" --arch {wanted}" if wanted else ""
        say = progress or (lambda _m: None)
        say(
            f"no kernel given and the tiny guest is not built yet: building it now "
            f"(`vmkit guest build{flag}`, once; or pass --kernel/--initrd, or -f spec.yaml)"
        )
        from vmkit.guest.build import build

        guest = build(arch=wanted, progress=say)
    boot = LinuxBoot(
        kernel=guest.kernel,
        initrd=spec.boot.initrd or guest.initrd,
        cmdline=tiny_cmdline(spec, spec.boot.cmdline),
    )
    return spec.replace(boot=boot)
