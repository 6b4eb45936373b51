"""The tiny guest's cache: which built guest (kernel + initramfs) matches this vmkit's
recipe. Kept apart from build.py so that every `vmkit run` finds its guest without
importing the builder (cpio, ELF, apt, compression: ~7 ms)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vmkit.guest import sshd
from vmkit.guest.apt import ARCHES
from vmkit.paths import cache_dir
from vmkit.plain import Frozen
from vmkit.sha import sha256

# What the guest needs; their dependencies are added from .modinfo.
WANTED_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "virtio_balloon",
    "virtiofs",
    "vmw_vsock_virtio_transport",
    "ext4",
    "isofs",
    "button",  # ACPI power button (x86_64; arm64 with ACPI)
    "gpio_keys",  # power button on arm64 device-tree machines (QEMU virt: PL061 GPIO)
    "evdev",
)


class GuestImage(Frozen):
    """Paths of a built tiny guest."""

    _fields = ("dir", "bzimage", "vmlinux", "initrd", "manifest")
    __slots__ = _fields

    def __init__(
        self,
        dir: Path,
        bzimage: Path,  # the distro's compressed kernel (vmlinuz), whatever the arch
        vmlinux: Path,
        initrd: Path,
        manifest: dict[str, object],
    ):
        self.dir, self.bzimage, self.vmlinux = dir, bzimage, vmlinux
        self.initrd, self.manifest = initrd, manifest

    @property
    def arch(self) -> str:
        return str(self.manifest.get("arch", ""))

    @property
    def image(self) -> Path:
        """The raw arm64 `Image` (arm64 guests): what vfkit boots without decompressing."""
        return self.dir / "Image"

    @property
    def kernel(self) -> Path:
        """The kernel vmkit boots by default: the PVH vmlinux on x86_64, the raw Image on
        arm64."""
        for path in (self.vmlinux, self.image):
            if path.exists():
                return path
        return self.bzimage


def debian_arch() -> str:
    machine = os.uname().machine.lower()
    return ARCHES.get(machine, machine)


def guest_root(base: Path | None = None) -> Path:
    return (base or cache_dir()) / "guest"


def recipe_id() -> str:
    """A short hash of what goes into the initramfs besides the packages (init script,
    module list), so a vmkit with a changed guest recipe never boots a stale cached guest."""
    h = sha256()
    h.update(_init_script())
    h.update("\n".join(WANTED_MODULES).encode())
    h.update("\n".join((*sshd.PACKAGES, *sshd.LIBRARIES)).encode())
    return str(h.hexdigest())[:10]


def _init_script() -> bytes:
    """The guest's init (package data beside this module; importlib.resources costs more)."""
    return (Path(__file__).parent / "init.sh").read_bytes()


def find_built(base: Path | None = None, arch: str | None = None) -> GuestImage | None:
    """The most recently built guest of the current recipe for `arch` (default: this
    machine's) in the cache, if any."""
    root = guest_root(base)
    if not root.is_dir():
        return None
    suffix = f"-{arch or debian_arch()}-{recipe_id()}"
    built = sorted(
        (p for p in root.iterdir() if p.name.endswith(suffix) and (p / "manifest.json").is_file()),
        key=lambda p: (p / "manifest.json").stat().st_mtime,
    )
    return load(built[-1]) if built else None


def load(d: Path) -> GuestImage:
    manifest = json.loads((d / "manifest.json").read_text())
    return GuestImage(d, d / "vmlinuz", d / "vmlinux", d / "initramfs.cpio.gz", manifest)
