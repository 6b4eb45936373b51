#!/usr/bin/env python3
"""Test fixture: a real Debian arm64 kernel, and the compressed forms distros ship it in.

Downloads `linux-image-<ver>-arm64` with apt (an isolated arm64 package list under the cache
dir, so the host's apt configuration is untouched), takes its raw `Image`, and writes beside
it the same Image compressed with the real gzip/zstd/xz/lz4 tools and wrapped in EFI zboot
headers (the layout of drivers/firmware/efi/libstub/zboot-header.S). Cached: a second run
does nothing. Run by scripts/setup.sh; tests read `$VMKIT_CACHE/test-kernels` (or
~/.cache/vmkit/test-kernels) and skip with a reason when it is missing.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("VMKIT_CACHE") or Path.home() / ".cache" / "vmkit") / "test-kernels"
COMPRESSORS = {
    "gz": ["gzip", "-9nc"],
    "zst": ["zstd", "-q", "-3", "-c"],
    "xz": ["xz", "-1", "--check=crc32", "-c"],
    "lz4": ["lz4", "-l", "-q", "-9", "-c"],
}
ZBOOT_NAMES = {"gz": "gzip", "zst": "zstd22", "xz": "xzkern", "lz4": "lz4"}


def apt(args: list[str], lists: Path) -> str:
    opts = [
        "-q",
        "-o", "APT::Architecture=arm64",
        "-o", "APT::Architectures::=arm64",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={lists.parent / 'apt-cache'}",
        "-o", "Dir::State::status=/dev/null",
    ]  # fmt: skip
    tool = "apt-cache" if args[0] in ("depends", "show") else "apt-get"
    proc = subprocess.run([tool, *opts, *args], capture_output=True, text=True, check=True)
    return proc.stdout


def fetch_image(work: Path) -> Path:
    lists = work / "lists"
    (lists / "partial").mkdir(parents=True)
    (work / "apt-cache" / "archives" / "partial").mkdir(parents=True)
    apt(["update"], lists)
    deps = apt(["depends", "linux-image-arm64"], lists)
    pkg = next(
        line.split()[1]
        for line in deps.splitlines()
        if line.strip().startswith("Depends: linux-image-")
    )
    subprocess.run(
        ["apt-get", "-q", "-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64",
         "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={work / 'apt-cache'}",
         "-o", "Dir::State::status=/dev/null", "download", f"{pkg}:arm64"],
        cwd=work, check=True, capture_output=True,
    )  # fmt: skip
    deb = next(work.glob("linux-image-*_arm64.deb"))
    tree = work / "tree"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    vmlinuz = next((tree / "boot").glob("vmlinuz-*"))
    (CACHE / "SOURCE").write_text(f"{deb.name}\n")
    return vmlinuz


def zboot(payload: bytes, comp: str, image_size: int) -> bytes:
    """An EFI zboot image around `payload`: MZ header, 'zimg', payload offset/size, type."""
    offset = 0x1000
    header = bytearray(offset)
    header[0:4] = b"MZ\0\0"
    header[4:8] = b"zimg"
    struct.pack_into("<II", header, 8, offset, len(payload))
    name = comp.encode()
    header[24 : 24 + len(name)] = name
    struct.pack_into("<I", header, 0x3C, 0x40)  # PE header offset
    header[0x40:0x44] = b"PE\0\0"
    return bytes(header) + payload + struct.pack("<I", image_size) + b"\0" * 512


def main() -> int:
    CACHE.mkdir(parents=True, exist_ok=True)
    image = CACHE / "Image"
    if not image.exists():
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            vmlinuz = fetch_image(Path(tmp))
            data = vmlinuz.read_bytes()
            if data[0x38:0x3C] != b"ARM\x64":
                sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
                from vmkit.storage.kernel import arm64_image

                (CACHE / "vmlinuz.orig").write_bytes(data)
                data = arm64_image(data)
            tmp_image = CACHE / "Image.tmp"
            tmp_image.write_bytes(data)
            tmp_image.replace(image)
    raw = image.read_bytes()
    for ext, argv in COMPRESSORS.items():
        out = CACHE / f"Image.{ext}"
        if not out.exists():
            if shutil.which(argv[0]) is None:
                print(
                    f"fetch_test_kernels: {argv[0]} missing, skipping Image.{ext}", file=sys.stderr
                )
                continue
            blob = subprocess.run(argv, input=raw, capture_output=True, check=True).stdout
            out.with_suffix(".tmp").write_bytes(blob)
            out.with_suffix(".tmp").replace(out)
        zb = CACHE / f"zboot-{ext}.efi"
        if not zb.exists():
            zb.write_bytes(zboot(out.read_bytes(), ZBOOT_NAMES[ext], len(raw)))
    print(f"test kernels in {CACHE}: " + ", ".join(sorted(p.name for p in CACHE.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
