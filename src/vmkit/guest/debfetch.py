"""Debian packages without apt or dpkg: for building the tiny guest on macOS (and on
distributions without apt). Reads the archive over HTTPS the way apt does, minus the
signature: InRelease's SHA256 of `Packages.xz`, the package's SHA256 in `Packages`, each
checked before use (TLS to the mirror stands in for apt's GPG check). A .deb is an `ar`
archive whose `data.tar.*` is unpacked here with every path kept inside the target.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

from vmkit.errors import VmkitError

DEFAULT_MIRROR = "https://deb.debian.org"
RELEASE = "bookworm"
# (archive path, suites): what a stock Debian 12 sources.list has.
ARCHIVES = (
    ("debian", (RELEASE, f"{RELEASE}-updates")),
    ("debian-security", (f"{RELEASE}-security",)),
)
TIMEOUT = 60.0
Progress = Callable[[str], None]


@dataclass(frozen=True)
class PackageEntry:
    package: str
    version: str
    depends: str
    url: str
    sha256: str
    size: int


# ---- Debian version ordering (deb-version(7)) ---------------------------------------------


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternate non-digit runs (by _order) and digit runs (numerically)."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return int(epoch or 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """<0, 0, >0 as dpkg --compare-versions a lt/eq/gt b."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


# ---- the archive index ---------------------------------------------------------------------


def parse_packages(text: str, base_url: str) -> Iterator[PackageEntry]:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, val = line.partition(":")
                fields[key] = val.strip()
        if {"Package", "Version", "Filename", "SHA256", "Size"} <= fields.keys():
            yield PackageEntry(
                fields["Package"],
                fields["Version"],
                fields.get("Depends", ""),
                f"{base_url}/{fields['Filename']}",
                fields["SHA256"],
                int(fields["Size"]),
            )


def release_sha256(inrelease: str, name: str) -> tuple[str, int]:
    """The SHA256 and size InRelease gives for `name` (e.g. main/binary-arm64/Packages.xz)."""
    section = inrelease.split("\nSHA256:\n", 1)
    if len(section) == 2:
        for line in section[1].splitlines():
            if not line.startswith(" "):
                break
            digest, size, path = line.split()
            if path == name:
                return digest, int(size)
    raise VmkitError(f"the archive's InRelease lists no SHA256 for {name}")


class Archive:
    """Every package of one architecture across Debian's suites (highest version wins)."""

    def __init__(self, arch: str, mirror: str | None = None, client: Any = None):
        self.arch = arch
        self.mirror = (mirror or os.environ.get("VMKIT_DEBIAN_MIRROR") or DEFAULT_MIRROR).rstrip(
            "/"
        )
        self._client = client
        self.packages: dict[str, PackageEntry] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.Client(follow_redirects=True, timeout=TIMEOUT)
        return self._client

    def _get(self, url: str) -> bytes:
        import httpx

        try:
            resp = self.client.get(url)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise VmkitError(
                f"cannot fetch {url}: {exc} (set VMKIT_DEBIAN_MIRROR to a reachable mirror)"
            ) from None
        return bytes(resp.content)

    def load(self, progress: Progress = lambda _m: None) -> None:
        for archive, suites in ARCHIVES:
            base = f"{self.mirror}/{archive}"
            for suite in suites:
                name = f"main/binary-{self.arch}/Packages.xz"
                progress(f"reading {archive} {suite} ({self.arch})")
                inrelease = self._get(f"{base}/dists/{suite}/InRelease").decode()
                digest, size = release_sha256(inrelease, name)
                blob = self._get(f"{base}/dists/{suite}/{name}")
                if len(blob) != size or hashlib.sha256(blob).hexdigest() != digest:
                    raise VmkitError(f"{base}/dists/{suite}/{name} does not match InRelease")
                for entry in parse_packages(lzma.decompress(blob).decode(errors="replace"), base):
                    have = self.packages.get(entry.package)
                    if have is None or compare_versions(entry.version, have.version) > 0:
                        self.packages[entry.package] = entry

    def entry(self, package: str) -> PackageEntry:
        try:
            return self.packages[package]
        except KeyError:
            raise VmkitError(f"the Debian archive has no {package} for {self.arch}") from None

    def kernel_package(self) -> str:
        """The versioned kernel package `linux-image-<arch>` depends on."""
        meta = self.entry(f"linux-image-{self.arch}")
        m = re.search(r"(linux-image-\d[^\s,|(]*)", meta.depends)
        if m is None:
            raise VmkitError(f"cannot find the kernel package behind linux-image-{self.arch}")
        return m.group(1)

    def download(self, package: str, into: Path, progress: Progress = lambda _m: None) -> Path:
        """The package's .deb in `into`, its SHA256 and size checked as it arrives."""
        import httpx

        entry = self.entry(package)
        target = into / f"{entry.package}_{entry.version.replace(':', '%3a')}_{self.arch}.deb"
        h = hashlib.sha256()
        done = step = 0
        try:
            with self.client.stream("GET", entry.url) as resp, target.open("wb") as out:
                resp.raise_for_status()
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if done * 10 // max(entry.size, 1) > step or done == entry.size:
                        step = done * 10 // max(entry.size, 1)  # a line per 10%
                        progress(f"downloading {entry.package} {done >> 20}/{entry.size >> 20} MiB")
        except httpx.HTTPError as exc:
            raise VmkitError(f"cannot fetch {entry.url}: {exc}") from None
        if done != entry.size or h.hexdigest() != entry.sha256:
            target.unlink(missing_ok=True)
            raise VmkitError(f"{entry.url} does not match the archive's SHA256: not used")
        return target


# ---- .deb contents -------------------------------------------------------------------------


def ar_members(f: IO[bytes]) -> Iterator[tuple[str, int, int]]:
    """(name, offset, size) of each member of an `ar` archive (a .deb)."""
    if f.read(8) != b"!<arch>\n":
        raise VmkitError("not a .deb (no ar header)")
    offset = 8
    while True:
        f.seek(offset)
        header = f.read(60)
        if len(header) < 60:
            return
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        yield name, offset + 60, size
        offset += 60 + size + (size & 1)


def extract(deb: Path, tree: Path) -> None:
    """Unpack the .deb's data.tar into `tree`: directories and regular files only, every
    path checked to stay inside `tree` (no symlinks, devices or `..`)."""
    with deb.open("rb") as f:
        for name, offset, size in ar_members(f):
            if not name.startswith("data.tar"):
                continue
            if name not in ("data.tar", "data.tar.xz", "data.tar.gz", "data.tar.bz2"):
                raise VmkitError(f"{deb.name}: {name} is not a compression vmkit can read")
            window = cast(IO[bytes], _Window(f, offset, size))
            with tarfile.open(fileobj=window, mode="r:*") as tar:
                _unpack(tar, tree)
            return
    raise VmkitError(f"{deb.name}: no data.tar member")


def _unpack(tar: tarfile.TarFile, tree: Path) -> None:
    root = tree.resolve()
    for member in tar:
        rel = PurePosixPath(member.name)
        if rel.is_absolute() or ".." in rel.parts:
            raise VmkitError(f"refusing the archive path {member.name!r}")
        dest = root.joinpath(*[p for p in rel.parts if p != "."])
        if member.isdir():
            dest.mkdir(parents=True, exist_ok=True)
        elif member.isfile():
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            with dest.open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            dest.chmod(member.mode & 0o755)


class _Window:
    """A read-only view of bytes [offset, offset+size) of a file, for tarfile."""

    def __init__(self, f: IO[bytes], offset: int, size: int):
        self.f, self.start, self.end, self.pos = f, offset, offset + size, offset

    def read(self, n: int = -1) -> bytes:
        left = self.end - self.pos
        n = left if n < 0 else min(n, left)
        self.f.seek(self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: self.start, 1: self.pos, 2: self.end}[whence]
        self.pos = max(self.start, min(self.end, base + pos))
        return self.pos - self.start

    def tell(self) -> int:
        return self.pos - self.start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


class ArchiveSource:
    """The PackageSource interface of guest.build, straight from the Debian archive."""

    def __init__(self, arch: str, mirror: str | None = None):
        self.archive = Archive(arch, mirror)

    def prepare(self, progress: Progress) -> None:
        self.archive.load(progress)

    def kernel_package(self) -> str:
        return self.archive.kernel_package()

    def fetch(
        self, packages: list[str], into: Path, progress: Progress
    ) -> dict[str, tuple[str, Path]]:
        return {
            p: (self.archive.entry(p).version, self.archive.download(p, into, progress))
            for p in packages
        }

    def unpack(self, deb: Path, tree: Path) -> None:
        extract(deb, tree)
