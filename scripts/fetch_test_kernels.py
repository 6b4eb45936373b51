#!/usr/bin/env python3
"""Test fixture: a real Debian arm64 kernel, and the compressed forms distros ship it in.

Takes the raw `Image` of the arm64 tiny guest (`vmkit guest build --arch arm64`, which
downloads `linux-image-<ver>-arm64` through a private arm64 apt list), and writes beside
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
from pathlib import Path

CACHE = Path(os.environ.get("VMKIT_CACHE") or Path.home() / ".cache" / "vmkit") / "test-kernels"
COMPRESSORS = {
    "gz": ["gzip", "-9nc"],
    "zst": ["zstd", "-q", "-3", "-c"],
    "xz": ["xz", "-1", "--check=crc32", "-c"],
    "lz4": ["lz4", "-l", "-q", "-9", "-c"],
}
ZBOOT_NAMES = {"gz": "gzip", "zst": "zstd22", "xz": "xzkern", "lz4": "lz4"}


def fetch_image() -> tuple[bytes, str]:
    """The raw Image of the arm64 tiny guest (built, or reused, by vmkit) and its package."""
    from vmkit.guest.build import build, find_built

    guest = find_built(arch="arm64") or build(arch="arm64")
    versions = guest.manifest.get("packages", {})
    assert isinstance(versions, dict)
    pkg = next(p for p in versions if p.startswith("linux-image-"))
    return guest.image.read_bytes(), f"{pkg}_{versions[pkg]}_arm64.deb"


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
        data, source = fetch_image()
        (CACHE / "SOURCE").write_text(f"{source}\n")
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
