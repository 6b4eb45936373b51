"""The tiny guest's SSH server: Debian's dropbear and the shared libraries it links.

dropbear (`dropbear-bin`) is dynamically linked, so its libraries come from their own
Debian packages, fetched the same way as the kernel and busybox (apt or the archive, same
bytes). Only the files dropbear loads go into the initramfs, each under its Debian path,
plus the dynamic loader at the path the ELF names (PT_INTERP). glibc >= 2.34 has NSS
`files` built in, so `getpwnam` needs no libnss module.
"""

from __future__ import annotations

from pathlib import Path

from vmkit.errors import VmkitError

TYPE_CHECKING = False  # not typing's: every `vmkit run` reads PACKAGES (guest/cache.py)
if TYPE_CHECKING:
    from vmkit.guest import cpio

PACKAGES = (
    "dropbear-bin", "libc6", "libcrypt1", "zlib1g", "libtomcrypt1", "libtommath1", "libgmp10"
)  # fmt: skip
LIBRARIES = (
    "libc.so.6", "libcrypt.so.1", "libz.so.1", "libtomcrypt.so.1", "libtommath.so.1", "libgmp.so.10"
)  # fmt: skip
BINARIES = {"bin/dropbear": "usr/sbin/dropbear", "bin/dropbearconvert": "usr/bin/dropbearconvert"}
# Debian arch -> (multiarch triplet, dynamic loader name, where the ELF expects it)
LOADERS = {
    "amd64": ("x86_64-linux-gnu", "ld-linux-x86-64.so.2", "lib64"),
    "arm64": ("aarch64-linux-gnu", "ld-linux-aarch64.so.1", "lib"),
}


def _resolve(tree: Path, rel: str, hops: int = 10) -> Path:
    """`rel` inside the unpacked tree, following symlinks (absolute ones relative to the
    tree), never leaving it."""
    path = tree / rel
    for _ in range(hops):
        if not path.is_symlink():
            break
        target = Path(path.readlink().as_posix())
        path = tree / str(target).lstrip("/") if target.is_absolute() else path.parent / target
    resolved = path.resolve()
    if not resolved.is_relative_to(tree.resolve()) or not resolved.is_file():
        raise VmkitError(f"the guest's SSH server: {rel} is missing from the unpacked packages")
    return resolved


def _library(tree: Path, libdir: str, name: str) -> bytes:
    """The file a soname names: the symlink apt's dpkg-deb unpacks, else (the archive
    source unpacks no symlinks) the one versioned file `NAME.*` beside where it would be."""
    for base in (libdir, f"usr/{libdir}"):
        path = tree / base / name
        if path.exists():
            return _resolve(tree, f"{base}/{name}").read_bytes()
        versioned = sorted(p for p in (tree / base).glob(f"{name}.*") if p.is_file())
        if len(versioned) == 1:
            return versioned[0].read_bytes()
    raise VmkitError(f"the guest's SSH server: {name} is in none of {', '.join(PACKAGES)}")


def entries(tree: Path, arch: str) -> list[cpio.Entry]:
    """The cpio entries for dropbear and its libraries, from the unpacked packages."""
    from vmkit.guest import cpio  # here: it loads dataclasses

    if arch not in LOADERS:
        raise VmkitError(f"no SSH server recipe for the {arch} tiny guest")
    triplet, loader, loader_dir = LOADERS[arch]
    libdir = f"lib/{triplet}"
    out = [cpio.directory(libdir), cpio.directory("etc/dropbear", 0o700)]
    if loader_dir != "lib":
        out.append(cpio.directory(loader_dir))
    out.append(cpio.symlink(f"{loader_dir}/{loader}", f"/{libdir}/{loader}"))
    for name in (loader, *LIBRARIES):
        data = _library(tree, libdir, name)
        out.append(cpio.file(f"{libdir}/{name}", data, 0o755))
    for dest, src in BINARIES.items():
        out.append(cpio.file(dest, _resolve(tree, src).read_bytes(), 0o755))
    return out
