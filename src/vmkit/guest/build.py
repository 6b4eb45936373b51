"""Build the tiny guest (Debian kernel + busybox initramfs) from distro packages.

No root-owned system install: `apt-get download` + `dpkg-deb -x` into a temp dir.
Module dependencies come from each `.ko`'s `.modinfo` (no depmod on a fresh machine).
The output is cached per kernel version, architecture and recipe, and is byte-for-byte
reproducible. `--arch arm64` on an x86_64 Debian machine builds the guest an Apple silicon
Mac boots with vfkit (which cannot build it: macOS has no apt): the raw arm64 `Image` is
written beside the compressed vmlinuz.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Protocol

from vmkit.errors import InvalidInput, VmkitError
from vmkit.guest import cpio, sshd
from vmkit.guest.apt import Apt, debian_arch_name
from vmkit.guest.cache import WANTED_MODULES as WANTED_MODULES
from vmkit.guest.cache import GuestImage as GuestImage
from vmkit.guest.cache import debian_arch as debian_arch
from vmkit.guest.cache import find_built as find_built
from vmkit.guest.cache import guest_root as guest_root
from vmkit.guest.cache import load as load
from vmkit.guest.cache import recipe_id as recipe_id
from vmkit.storage import elf, kernel

_ACPI_POWER_ACTION = (
    b"#!/bin/sh\n# ACPI power button: ask init (pid 1) to power off cleanly.\nexec poweroff\n"
)
_UDHCPC_SCRIPT = b"""#!/bin/sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
        ;;
esac
exit 0
"""


def prune(in_use: set[Path], base: Path | None = None, dry_run: bool = False) -> list[Path]:
    """Remove built guests of older recipes (a vmkit upgrade leaves them behind, ~130 MB
    each) unless `in_use` names a file in them (a VM or snapshot boots from it). Returns
    what was (or, with dry_run, would be) removed."""
    root = guest_root(base)
    if not root.is_dir():
        return []
    current = f"-{recipe_id()}"
    gone = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.endswith(current) or d.name.startswith(".build-"):
            continue
        if not (d / "manifest.json").is_file():
            continue  # not something `build` made
        if any(p.is_relative_to(d) for p in in_use):
            continue
        gone.append(d)
        if not dry_run:
            shutil.rmtree(d)
    return gone


class PackageSource(Protocol):
    """Where the guest's Debian packages come from: apt (apt.Apt) or the archive itself
    (debfetch.ArchiveSource, where there is no apt: macOS)."""

    def prepare(self, progress: Callable[[str], None]) -> None: ...
    def kernel_package(self) -> str: ...
    def fetch(
        self, packages: list[str], into: Path, progress: Callable[[str], None]
    ) -> dict[str, tuple[str, Path]]: ...
    def unpack(self, deb: Path, tree: Path) -> None: ...


SOURCE_ENV = "VMKIT_GUEST_SOURCE"  # apt | archive (default: apt where it exists)


def package_source(arch: str, state_dir: Path, name: str | None = None) -> PackageSource:
    name = (
        name
        or os.environ.get(SOURCE_ENV)
        or (
            "apt"
            if all(shutil.which(t) for t in ("apt-get", "apt-cache", "dpkg-deb"))
            else "archive"
        )
    )
    if name == "apt":
        return Apt(arch, debian_arch(), state_dir)
    if name == "archive":
        from vmkit.guest.debfetch import ArchiveSource

        return ArchiveSource(arch)
    raise InvalidInput(f"{SOURCE_ENV}: {name!r} is not a package source; use apt or archive")


def build(
    *,
    base: Path | None = None,
    force: bool = False,
    arch: str | None = None,
    source_name: str | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> GuestImage:
    arch = debian_arch_name(arch) if arch else debian_arch()
    root = guest_root(base)
    source = package_source(arch, root.parent, source_name)
    source.prepare(progress)
    kpkg = source.kernel_package()
    out_dir = root / f"{kpkg.removeprefix('linux-image-')}-{arch}-{recipe_id()}"
    if out_dir.joinpath("manifest.json").is_file() and not force:
        progress(f"already built: {out_dir}")
        return load(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp_s:
        tmp = Path(tmp_s)
        fetched = source.fetch([kpkg, "busybox-static", *sshd.PACKAGES], tmp, progress)
        versions = {name: version for name, (version, _deb) in sorted(fetched.items())}
        tree = tmp / "tree"
        for _version, deb in fetched.values():
            progress(f"unpacking {deb.name}")
            source.unpack(deb, tree)
        bzimage = next(iter(sorted((tree / "boot").glob("vmlinuz-*"))), None)
        if bzimage is None:
            raise VmkitError(f"{kpkg} holds no /boot/vmlinuz-*")
        kver = bzimage.name.removeprefix("vmlinuz-")
        mod_root = _modules_dir(tree, kver)
        busybox = tree / "bin" / "busybox"
        progress("resolving modules from .modinfo")
        order = resolve_modules(mod_root, WANTED_MODULES)
        progress(f"packing initramfs ({len(order)} modules)")
        extra = sshd.entries(tree, arch)
        initrd = gzip.compress(
            build_initramfs(busybox.read_bytes(), mod_root, order, extra), mtime=0
        )
        stage = tmp / "out"
        stage.mkdir()
        shutil.copyfile(bzimage, stage / "vmlinuz")
        (stage / "initramfs.cpio.gz").write_bytes(initrd)
        if arch == "amd64":
            progress("extracting the PVH vmlinux from the bzImage")
            vmlinux = kernel.extract_vmlinux(bzimage.read_bytes())
            if not kernel.has_pvh_note(vmlinux):
                raise VmkitError("the extracted vmlinux has no PVH entry note (Xen type 0x12)")
            (stage / "vmlinux").write_bytes(vmlinux)
        elif arch == "arm64":
            progress("decompressing the raw arm64 Image (vfkit boots only that)")
            packed = bzimage.read_bytes()
            image = kernel.arm64_image(packed)
            if image is packed:  # Debian's arm64 vmlinuz is the raw Image already
                os.link(stage / "vmlinuz", stage / "Image")
            else:
                (stage / "Image").write_bytes(image)
        manifest = {
            "kernel_version": kver,
            "arch": arch,
            "packages": versions,
            "modules": order,
            "recipe": recipe_id(),
            "sha256": {
                p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(stage.iterdir())
            },
        }
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        stage.rename(out_dir)
    progress(f"built {out_dir}")
    return load(out_dir)


def _modules_dir(tree: Path, kver: str) -> Path:
    for cand in (tree / "lib" / "modules" / kver, tree / "usr" / "lib" / "modules" / kver):
        if cand.is_dir():
            return cand
    raise VmkitError(f"no modules directory for kernel {kver} in the package")


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    return data


def module_index(mod_root: Path) -> dict[str, Path]:
    """Module name (dashes normalised to underscores) -> file."""
    index: dict[str, Path] = {}
    for path in sorted(mod_root.rglob("*.ko*")):
        if path.name.endswith((".ko", ".ko.xz", ".ko.gz")):
            index[path.name.split(".ko")[0].replace("-", "_")] = path
    return index


def resolve_modules(mod_root: Path, wanted: tuple[str, ...]) -> list[str]:
    """Wanted modules plus their dependencies, dependencies first (paths relative to root).

    Wanted modules absent from this kernel (built in, or renamed) are skipped.
    """
    index = module_index(mod_root)
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in seen or name not in index:
            return
        if name in stack:
            raise VmkitError(f"module dependency cycle: {' -> '.join((*stack, name))}")
        info = elf.modinfo(_read_module(index[name]))
        for dep in ",".join(info.get("depends", [])).split(","):
            if dep:
                visit(dep.replace("-", "_"), (*stack, name))
        seen.add(name)
        order.append(str(index[name].relative_to(mod_root)).removesuffix(".xz").removesuffix(".gz"))

    for name in wanted:
        visit(name, ())
    return order


def build_initramfs(
    busybox: bytes, mod_root: Path, order: list[str], extra: list[cpio.Entry] | None = None
) -> bytes:
    init = resources.files("vmkit.guest").joinpath("init.sh").read_bytes()
    dirs = "bin dev etc etc/acpi etc/acpi/PWRF lib lib/modules proc sys tmp run root"
    entries = [cpio.directory(d) for d in dirs.split()]
    entries += [
        cpio.file("bin/busybox", busybox, 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.file("init", init, 0o755),
        cpio.chardev("dev/console", 5, 1),
        cpio.chardev("dev/null", 1, 3, 0o666),
        cpio.file("etc/acpi/PWRF/00000080", _ACPI_POWER_ACTION, 0o755),
        cpio.file("etc/udhcpc.script", _UDHCPC_SCRIPT, 0o755),
        cpio.file("etc/modules.order", "".join(f"{m}\n" for m in order).encode()),
        cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
    ]
    entries += extra or []
    made_dirs: set[str] = set()
    for rel in order:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "lib/modules/" + "/".join(parts[:i])
            if d not in made_dirs:
                made_dirs.add(d)
                entries.append(cpio.directory(d))
        src = next(mod_root.glob(rel + "*"))
        entries.append(cpio.file(f"lib/modules/{rel}", _read_module(src)))
    return cpio.write(entries)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["GuestImage", "build", "find_built"]
