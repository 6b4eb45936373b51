"""Cloud images: verified downloads into a content-addressed cache.

    <cache>/images/partial/<key>.part      a download in progress (resumed with Range)
    <cache>/images/partial/<key>.json      its URL and ETag/Last-Modified (for If-Range)
    <cache>/images/locks/<key>.lock        held while a pull of that URL runs
    <cache>/images/<algo>-<hex>/<file>     a verified image, named by its checksum
    <cache>/images/index.json              names and URLs -> cached images

A download is hashed as it arrives and checked against the publisher's checksum file
before it is renamed into the cache, so a corrupted or interrupted download never enters
it: a wrong checksum deletes the partial file; an interrupted one keeps it for a resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vmkit.errors import InvalidInput, NotFound, VmkitError, VMStateError
from vmkit.paths import cache_dir, ensure_private_dir
from vmkit.store import atomic_write_json, file_lock, read_json

Progress = Callable[[int, int | None], None]

_DEB = "https://cloud.debian.org/images/cloud"
_UBU = "https://cloud-images.ubuntu.com/noble/current"
_FED = "https://download.fedoraproject.org/pub/fedora/linux/releases/41/Cloud"
_ALP = "https://dl-cdn.alpinelinux.org/alpine/v3.20/releases/cloud"

# name -> arch -> (image URL, checksum file URL)
CATALOG: dict[str, dict[str, tuple[str, str]]] = {
    "debian-12": {
        a: (
            f"{_DEB}/bookworm/latest/debian-12-generic-{d}.qcow2",
            f"{_DEB}/bookworm/latest/SHA512SUMS",
        )
        for a, d in (("x86_64", "amd64"), ("aarch64", "arm64"))
    },
    "debian-13": {
        a: (f"{_DEB}/trixie/latest/debian-13-generic-{d}.qcow2", f"{_DEB}/trixie/latest/SHA512SUMS")
        for a, d in (("x86_64", "amd64"), ("aarch64", "arm64"))
    },
    "ubuntu-24.04": {
        a: (f"{_UBU}/noble-server-cloudimg-{d}.img", f"{_UBU}/SHA256SUMS")
        for a, d in (("x86_64", "amd64"), ("aarch64", "arm64"))
    },
    "fedora-41": {
        a: (
            f"{_FED}/{a}/images/Fedora-Cloud-Base-Generic-41-1.4.{a}.qcow2",
            f"{_FED}/{a}/images/Fedora-Cloud-41-1.4-{a}-CHECKSUM",
        )
        for a in ("x86_64", "aarch64")
    },
    "alpine-3.20": {
        a: (
            f"{_ALP}/nocloud_alpine-3.20.3-{a}-{'bios' if a == 'x86_64' else 'uefi'}"
            "-cloudinit-r0.qcow2",
            f"{_ALP}/nocloud_alpine-3.20.3-{a}-{'bios' if a == 'x86_64' else 'uefi'}"
            "-cloudinit-r0.qcow2.sha512",
        )
        for a in ("x86_64", "aarch64")
    },
}
_ALGOS = {64: "sha256", 128: "sha512"}
_LINE_RES = (
    re.compile(r"^(?P<hash>[0-9a-fA-F]{64}|[0-9a-fA-F]{128})\s+\*?(?P<name>\S+)\s*$"),
    re.compile(r"^(?P<algo>SHA256|SHA512)\s*\((?P<name>[^)]+)\)\s*=\s*(?P<hash>[0-9a-fA-F]+)$"),
)


@dataclass(frozen=True)
class CachedImage:
    name: str
    url: str
    path: str
    algo: str
    digest: str
    size: int
    pulled_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def images_dir() -> Path:
    d = cache_dir() / "images"
    ensure_private_dir(d, "VMKIT_CACHE")
    return d


def resolve(name_or_url: str, arch: str) -> tuple[str, str, str | None]:
    """(name, image URL, checksum URL or None) for a catalog name or a URL."""
    if name_or_url in CATALOG:
        per_arch = CATALOG[name_or_url]
        if arch not in per_arch:
            raise InvalidInput(f"{name_or_url} has no {arch} image; it has {', '.join(per_arch)}")
        url, sums = per_arch[arch]
        return name_or_url, url, sums
    parsed = urlparse(name_or_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        known = ", ".join(sorted(CATALOG))
        raise InvalidInput(f"{name_or_url!r} is neither a known image ({known}) nor an http(s) URL")
    return Path(parsed.path).name or "image", name_or_url, None


def cache_filename(url: str) -> str:
    """The URL's last path segment as a safe file name in the cache (else `image`)."""
    name = Path(urlparse(url).path).name
    if not re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,200}", name):
        return "image"
    return name


def expected_digest(checksums: str, filename: str) -> tuple[str, str]:
    """(algo, hex) for `filename` in a checksum file (GNU `sha256sum` or BSD style, or a
    file holding just the hash)."""
    lines = [ln.strip() for ln in checksums.splitlines() if ln.strip()]
    for line in lines:
        for rx in _LINE_RES:
            m = rx.match(line)
            if m and Path(m.group("name")).name == filename:
                digest = m.group("hash").lower()
                return _ALGOS.get(len(digest), "sha256"), digest
    if len(lines) == 1 and re.fullmatch(r"[0-9a-fA-F]{64}|[0-9a-fA-F]{128}", lines[0].split()[0]):
        digest = lines[0].split()[0].lower()
        return _ALGOS[len(digest)], digest
    raise VmkitError(f"the checksum file lists no checksum for {filename!r}")


def _parse_checksum_arg(value: str) -> tuple[str, str] | None:
    """(algo, hex) for `sha256:HEX`/`sha512:HEX`, None for a checksum file's http(s) URL;
    anything else is refused."""
    m = re.fullmatch(r"(sha256|sha512):([0-9a-fA-F]+)", value)
    if m:
        algo, digest = m.group(1), m.group(2).lower()
        if len(digest) != {"sha256": 64, "sha512": 128}[algo]:
            raise InvalidInput(f"--checksum {value!r}: wrong length for {algo}")
        return algo, digest
    if re.fullmatch(r"https?://[^\s]+", value) is None:
        raise InvalidInput(
            f"--checksum {value!r}: give sha256:HEX, sha512:HEX or the http(s) URL of the "
            "publisher's checksum file"
        )
    return None


def _fetch_digest(client: Any, sums_url: str, filename: str, name_or_url: str) -> tuple[str, str]:
    import httpx

    try:
        resp = client.get(sums_url)
    except httpx.HTTPError as exc:
        raise VmkitError(f"cannot get the checksum file {sums_url}: {exc}") from None
    if resp.status_code != 200:
        raise VmkitError(
            f"cannot get the checksum file {sums_url}: HTTP {resp.status_code}"
            + _stale_hint(name_or_url, resp.status_code)
        )
    return expected_digest(resp.text, filename)


def _check_cached(cached: CachedImage, asked: tuple[str, str] | None) -> CachedImage:
    """Re-hash the cached file against what was asked (else its own record), every time."""
    algo, digest = asked or (cached.algo, cached.digest)
    hasher = hashlib.new(algo)
    with open(cached.path, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    if hasher.hexdigest() != digest:
        raise VmkitError(
            f"the cached {cached.path} does not match the checksum asked ({algo} {digest}, "
            f"the file is {hasher.hexdigest()}); remove it with `vmkit image rm {cached.url}` "
            "and pull again"
        )
    return cached


def pull(
    name_or_url: str,
    arch: str,
    checksum: str | None = None,
    progress: Progress = lambda _done, _total: None,
    timeout: float = 60.0,
) -> CachedImage:
    """Download (or resume), verify and cache an image; a cached one is returned at once."""
    import httpx

    name, url, sums_url = resolve(name_or_url, arch)
    filename = Path(urlparse(url).path).name  # as the checksum file names it
    fixed = _parse_checksum_arg(checksum) if checksum is not None else None
    if fixed is None and checksum:
        sums_url = checksum
    cached = _find(url)
    if cached is not None and Path(cached.path).exists():
        asked = fixed
        if asked is None and checksum:
            with httpx.Client(follow_redirects=True, timeout=timeout) as client:
                asked = _fetch_digest(client, checksum, filename, name_or_url)
        return _check_cached(cached, asked)
    if fixed is None and sums_url is None:
        raise InvalidInput(
            f"no checksum for {url}: give --checksum URL_OF_CHECKSUM_FILE or "
            "--checksum sha256:HEX (vmkit never caches an unverified image)"
        )
    partial = images_dir() / "partial"
    partial.mkdir(mode=0o700, exist_ok=True)
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    # One pull per URL at a time: a second one would write into the same partial file.
    locks = images_dir() / "locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    with file_lock(locks / f"{key}.lock", 0.0, f"the download of {url}"):
        with httpx.Client(follow_redirects=True, timeout=timeout) as client:
            if fixed is not None:
                algo, digest = fixed
            else:
                assert sums_url is not None
                algo, digest = _fetch_digest(client, sums_url, filename, name_or_url)
            cached = _find(url)  # the pull we waited for may have finished it
            if cached is not None and Path(cached.path).exists():
                return _check_cached(cached, (algo, digest))
            try:
                with _large_reads():
                    part = _download(client, url, partial / f"{key}.part", algo, digest, progress)
            except VmkitError as exc:
                if "HTTP 404" in str(exc) or "HTTP 410" in str(exc):
                    raise VmkitError(f"{exc}{_stale_hint(name_or_url, 404)}") from None
                raise
        return _commit(name, url, part, cache_filename(url), algo, digest)


def _stale_hint(name_or_url: str, status: int) -> str:
    if name_or_url in CATALOG and status in (404, 410):
        return (
            f"; the catalog entry {name_or_url!r} may be out of date (publishers move old "
            "releases): pull the image by URL with --checksum URL_OF_ITS_CHECKSUM_FILE"
        )
    return ""


@contextlib.contextmanager
def _large_reads(size: int = 1 << 20) -> Iterator[None]:
    """Let httpx read up to `size` bytes per socket read while an image downloads.

    httpcore reads 64 KiB at a time (HTTP11Connection.READ_NUM_BYTES, a class constant
    with no public setting); at 1 MiB the Python work per byte drops and a local 256 MiB
    pull measured 488 -> 330 ms (docs/benchmarks.md). If a later httpcore renames the
    constant this does nothing and downloads are only slower."""
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:
        yield
        return
    old = getattr(HTTP11Connection, "READ_NUM_BYTES", None)
    if not isinstance(old, int) or old >= size:
        yield
        return
    HTTP11Connection.READ_NUM_BYTES = size
    try:
        yield
    finally:
        HTTP11Connection.READ_NUM_BYTES = old


def _validator(headers: Any) -> str | None:
    """What identifies this version of the remote file (for If-Range on a resume)."""
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):  # a weak ETag cannot guard a byte range
        return str(etag)
    modified = headers.get("last-modified")
    return str(modified) if modified else None


def _download(
    client: Any, url: str, part: Path, algo: str, digest: str, progress: Progress
) -> Path:
    """Fetch `url` into `part`, resuming what an earlier cut-off pull left there.

    The resume asks only for the missing bytes (Range), and only of the same version of the
    file (If-Range with the ETag or Last-Modified seen before; a changed file comes back
    whole). Everything is hashed as it arrives; on a mismatch the part file is deleted."""
    import httpx

    meta = part.with_suffix(".json")
    have = part.stat().st_size if part.exists() else 0
    headers: dict[str, str] = {}
    seen: str | None = None
    if have:
        with contextlib.suppress(OSError, ValueError):
            seen = read_json(meta).get("validator")
        headers["Range"] = f"bytes={have}-"
        if seen:
            headers["If-Range"] = seen
    hasher = hashlib.new(algo)  # inline: a hashing thread measured slower (GIL hand-offs)
    try:
        headers["Accept-Encoding"] = "identity"  # the bytes the checksum file describes
        with client.stream("GET", url, headers=headers) as resp:
            status = resp.status_code
            if status == 206 and have:
                got = resp.headers.get("content-range", "")
                if not got.startswith(f"bytes {have}-"):
                    raise VmkitError(
                        f"the server answered the resume of {url} with the wrong range "
                        f"({got!r}, asked for bytes {have}-); delete {part} and pull again"
                    )
            elif status == 416 and have:
                pass  # nothing left to fetch: the part file may be complete
            elif status == 200:
                have = 0  # no resume (the server ignores Range, or the file changed)
            else:
                raise VmkitError(f"cannot download {url}: HTTP {status}")
            validator = _validator(resp.headers)
            total = None
            length = resp.headers.get("content-length")
            if length is not None and status in (200, 206):
                total = have + int(length)
            if have:
                with part.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        hasher.update(chunk)
            if status == 416:
                resp.close()
            else:
                atomic_write_json(meta, {"url": url, "validator": validator})
                fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "r+b") as out:
                    out.truncate(have)
                    out.seek(have)
                    done = have
                    for chunk in resp.iter_raw():  # as it arrives (no re-chunking): a cut keeps all
                        out.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        progress(done, total)
                    out.flush()
                    os.fsync(out.fileno())  # what enters the cache is on disk
                if total is not None and done < total:
                    raise VmkitError(
                        f"the download of {url} stopped at {done} of {total} bytes; "
                        "run the same pull again to resume it"
                    )
    except httpx.HTTPError as exc:
        raise VmkitError(
            f"the download of {url} was interrupted ({exc}); run the same pull again to resume it"
        ) from None
    got_digest = hasher.hexdigest()
    if got_digest != digest:
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise VmkitError(
            f"checksum mismatch for {url}: expected {algo} {digest}, got {got_digest}; "
            "the download was deleted and nothing was cached"
        )
    meta.unlink(missing_ok=True)
    return part


def _index_path() -> Path:
    return images_dir() / "index.json"


def _load_index() -> list[dict[str, Any]]:
    try:
        data: list[dict[str, Any]] = read_json(_index_path())
    except (FileNotFoundError, ValueError):
        return []
    return data


def _find(url: str) -> CachedImage | None:
    for entry in _load_index():
        if entry["url"] == url:
            return CachedImage(**entry)
    return None


def _commit(name: str, url: str, part: Path, filename: str, algo: str, digest: str) -> CachedImage:
    """Move a verified download into its content-addressed folder and record it."""
    final_dir = images_dir() / f"{algo}-{digest[:32]}"
    final_dir.mkdir(mode=0o700, exist_ok=True)
    final = final_dir / filename
    os.replace(part, final)
    _fsync_dir(final_dir)
    image = CachedImage(name, url, str(final), algo, digest, final.stat().st_size, time.time())
    with file_lock(images_dir() / ".lock", 30.0, "the image cache"):
        entries = [e for e in _load_index() if e["url"] != url]
        entries.append(image.to_json())
        atomic_write_json(_index_path(), entries)
    return image


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_images() -> list[CachedImage]:
    return [CachedImage(**e) for e in _load_index()]


def find(name_or_url: str) -> CachedImage:
    for image in list_images():
        if name_or_url in (image.name, image.url, image.digest):
            return image
    raise NotFound(f"no cached image {name_or_url!r} (see `vmkit image ls`)")


def readers(image: CachedImage, store_home: Path | None = None) -> list[str]:
    """Who reads through to `image` with a qcow2 overlay: `vm NAME` / `snapshot NAME` (or
    the overlay's path) in the store at `store_home`."""
    from vmkit.paths import data_home
    from vmkit.storage import disk

    home = store_home or data_home()
    folder = Path(image.path).parent
    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    out = []
    for overlay in disk.overlays_of(files, [home / "vms", home / "snapshots"]):
        rel = overlay.relative_to(home).parts
        out.append(
            f"{'vm' if rel[0] == 'vms' else 'snapshot'} {rel[1]}" if len(rel) > 2 else str(overlay)
        )
    return sorted(set(out))


def remove(name_or_url: str, force: bool = False, store_home: Path | None = None) -> CachedImage:
    """Drop a cached image. Refused while qcow2 overlays (VM disks, snapshot disks) in the
    store at `store_home` read through to it, unless `force`: they could not start again."""
    image = find(name_or_url)
    with file_lock(images_dir() / ".lock", 30.0, "the image cache"):
        entries = [e for e in _load_index() if e["url"] != image.url]
        last = not any(e["digest"] == image.digest for e in entries)
        if last and not force:
            users = readers(image, store_home)
            if users:
                raise VMStateError(
                    f"cannot remove {image.name}: qcow2 overlays of {', '.join(users)} read "
                    "through to it and could not start again; remove those first, or use "
                    "`vmkit image rm --force`"
                )
        atomic_write_json(_index_path(), entries)
        if last:
            shutil.rmtree(Path(image.path).parent, ignore_errors=True)
    return image


def raw_copy(image: CachedImage, progress: Callable[[float], None] = lambda _p: None) -> Path:
    """The image as a raw file (for VMMs that need raw), converted once and cached."""
    from vmkit.storage import disk

    src = Path(image.path)
    if disk.sniff_format(src) == "raw":
        return src
    raw = src.with_suffix(".raw")
    if not raw.exists():
        tmp = raw.with_name(f".{raw.name}.tmp")
        tmp.unlink(missing_ok=True)
        disk.convert(src, tmp, "raw", progress)
        os.replace(tmp, raw)
    return raw
