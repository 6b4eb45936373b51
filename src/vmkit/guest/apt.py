"""Download Debian packages for the tiny guest, for this machine's architecture or another.

The host's own apt serves its own architecture. For another one (an arm64 guest for Apple
Silicon Macs, built on an x86_64 Debian machine) apt runs with a private package list under
the cache dir, so the host's apt state and configuration (sources, proxies) are used but
never changed, and no `dpkg --add-architecture` is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vmkit.errors import InvalidInput, VmkitError

ARCHES = {"amd64": "amd64", "x86_64": "amd64", "arm64": "arm64", "aarch64": "arm64"}
LIST_MAX_AGE = 24 * 3600.0  # refresh a private package list at most daily
SOURCE_HINT = (
    "VMKIT_GUEST_SOURCE=apt needs apt-get, apt-cache and dpkg-deb (Debian/Ubuntu); without "
    "them vmkit reads the Debian archive itself (VMKIT_GUEST_SOURCE=archive, the default there)"
)


def debian_arch_name(name: str) -> str:
    """`x86_64`/`amd64` -> amd64, `aarch64`/`arm64` -> arm64; anything else is refused."""
    arch = ARCHES.get(name.lower())
    if arch is None:
        raise InvalidInput(
            f"--arch: {name!r} is not an architecture the tiny guest is built for; use one of "
            "amd64 (x86_64) or arm64 (aarch64)"
        )
    return arch


def need(tool: str) -> str:
    import shutil  # here, as subprocess: every `vmkit run` loads this module's ARCHES

    found = shutil.which(tool)
    if not found:
        raise VmkitError(f"`{tool}` not found: {SOURCE_HINT}")
    return found


def run(argv: list[str], cwd: Path | None = None) -> str:
    import subprocess

    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VmkitError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class Apt:
    """apt-get/apt-cache for one architecture: the host's, or a private list for another."""

    def __init__(self, arch: str, host_arch: str, state_dir: Path):
        self.arch = arch
        self.foreign = arch != host_arch
        self.state_dir = state_dir / f"apt-{arch}"

    def _opts(self) -> list[str]:
        if not self.foreign:
            return ["-q"]
        lists = self.state_dir / "lists"
        return [
            "-q",
            "-o", f"APT::Architecture={self.arch}",
            "-o", f"APT::Architectures::={self.arch}",
            "-o", f"Dir::State::Lists={lists}",
            "-o", f"Dir::Cache={self.state_dir / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
        ]  # fmt: skip

    def refresh(self) -> None:
        """Fetch the private package list when missing or a day old (foreign arch only)."""
        if not self.foreign:
            return
        lists = self.state_dir / "lists"
        stamp = self.state_dir / "updated"
        if stamp.exists() and time.time() - stamp.stat().st_mtime < LIST_MAX_AGE:
            return
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.state_dir / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        run([need("apt-get"), *self._opts(), "update"])
        if not any(lists.glob("*_Packages*")):
            raise VmkitError(
                f"apt found no {self.arch} packages in this machine's sources "
                "(/etc/apt/sources.list*): the mirror must carry that architecture "
                "(deb.debian.org does; Ubuntu keeps arm64 on ports.ubuntu.com)"
            )
        stamp.touch()

    def kernel_package(self) -> str:
        """The versioned kernel package the `linux-image-<arch>` metapackage depends on."""
        out = run([need("apt-cache"), *self._opts(), "depends", f"linux-image-{self.arch}"])
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Depends: linux-image-") and line.split()[1][12:13].isdigit():
                return line.split()[1]
        raise VmkitError(
            f"cannot find the kernel package behind linux-image-{self.arch} (apt-cache depends)"
        )

    def download(self, packages: list[str], into: Path) -> list[Path]:
        """The .deb files of `packages` (for this arch), downloaded into `into`."""
        names = [f"{p}:{self.arch}" if self.foreign else p for p in packages]
        run([need("apt-get"), *self._opts(), "download", *names], cwd=into)
        return sorted(into.glob("*.deb"))

    # ---- the PackageSource interface of guest.build ----------------------------------------
    def prepare(self, progress: Callable[[str], None]) -> None:
        if self.foreign:
            progress(f"fetching the {self.arch} package list (a private apt list under "
                     f"{self.state_dir})")  # fmt: skip
        self.refresh()

    def fetch(
        self, packages: list[str], into: Path, progress: Callable[[str], None]
    ) -> dict[str, tuple[str, Path]]:
        """package -> (version, .deb) for each of `packages`, downloaded into `into`."""
        progress(f"downloading {', '.join(packages)} ({self.arch}) with apt-get")
        dpkg_deb = need("dpkg-deb")
        out = {}
        for deb in self.download(packages, into):
            name = run([dpkg_deb, "-f", str(deb), "Package"]).strip()
            out[name] = (run([dpkg_deb, "-f", str(deb), "Version"]).strip(), deb)
        return out

    def unpack(self, deb: Path, tree: Path) -> None:
        run([need("dpkg-deb"), "-x", str(deb), str(tree)])
