"""Kernel image formats: what a kernel file is, and how to turn it into what a VMM boots.

- x86: a bzImage, or the ELF `vmlinux` inside it. A PVH-capable ELF (Xen PHYS32 note)
  boots directly under QEMU and Cloud Hypervisor and skips the bzImage decompressor
  (2.8 s vs 6.5 s to ready under TCG on the reference machine).
- arm64: the raw `Image` (magic `ARM\\x64` at 0x38), a compressed `vmlinuz` (gzip, zstd,
  xz, lz4, bzip2 of an Image), or an EFI zboot PE (`MZ` + `zimg`: a compressed Image
  behind a small EFI decompressor, what newer distro arm64 kernels ship). Apple's
  Virtualization.framework (vfkit) needs the raw Image, so `arm64_image()` peels the layers.
"""

from __future__ import annotations

import bz2
import lzma
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from vmkit.storage import elf

XEN_ELFNOTE_PHYS32_ENTRY = 0x12
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b\x08"
ARM64_MAGIC = b"ARM\x64"  # at 0x38 of an arm64 Image (Documentation/arch/arm64/booting.rst)
ZBOOT_MAGIC = b"zimg"  # at 4 of an EFI zboot image (drivers/firmware/efi/libstub/zboot-header.S)
EM_X86_64 = 62
EM_AARCH64 = 183

# Compressed-stream magics, as the kernel's own build writes them.
COMPRESSION_MAGICS = (
    ("gzip", _GZIP_MAGIC),
    ("xz", _XZ_MAGIC),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("lz4", b"\x02\x21\x4c\x18"),  # lz4 legacy frame (what `lz4 -l` and the kernel use)
    ("lz4", b"\x04\x22\x4d\x18"),  # lz4 frame
    ("bzip2", b"BZh"),
)
# Tools used for formats the Python stdlib cannot read (Python 3.11 has no zstd/lz4).
DECOMPRESS_TOOLS = {"zstd": ["zstd", "-dcq"], "lz4": ["lz4", "-dcq"]}
TOOL_HINT = "Debian/Ubuntu: `apt-get install zstd lz4`; macOS: `brew install zstd lz4`"


class KernelFormat(StrEnum):
    ELF_PVH = "elf-pvh"
    ELF = "elf"
    BZIMAGE = "bzimage"
    ARM64_IMAGE = "arm64-image"
    EFI_ZBOOT = "efi-zboot"
    COMPRESSED = "compressed"  # a compressed stream (gzip/zstd/xz/lz4/bzip2) of another kernel
    UNKNOWN = "unknown"


class KernelFormatError(ValueError):
    pass


def is_bzimage(data: bytes) -> bool:
    return len(data) > 0x206 and data[0x202:0x206] == b"HdrS"


def is_arm64_image(data: bytes) -> bool:
    return len(data) >= 0x40 and data[0x38:0x3C] == ARM64_MAGIC


def is_efi_zboot(data: bytes) -> bool:
    return len(data) >= 0x40 and data[:2] == b"MZ" and data[4:8] == ZBOOT_MAGIC


def compression_of(data: bytes) -> str | None:
    """The compression format `data` starts with, or None."""
    for name, magic in COMPRESSION_MAGICS:
        if data.startswith(magic):
            return name
    return None


def has_pvh_note(data: bytes) -> bool:
    return any(
        name == "Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY for name, ntype, _ in elf.notes(data)
    )


def _detect_bytes(data: bytes) -> KernelFormat:
    if data[:4] == elf.ELF_MAGIC:
        try:
            return KernelFormat.ELF_PVH if has_pvh_note(data) else KernelFormat.ELF
        except (elf.ElfError, IndexError, ValueError):
            return KernelFormat.UNKNOWN
    if is_bzimage(data):
        return KernelFormat.BZIMAGE
    if is_arm64_image(data):
        return KernelFormat.ARM64_IMAGE
    if is_efi_zboot(data):
        return KernelFormat.EFI_ZBOOT
    if compression_of(data) is not None:
        return KernelFormat.COMPRESSED
    return KernelFormat.UNKNOWN


def detect(path: Path) -> KernelFormat:
    return _detect_bytes(path.read_bytes())


# ---- decompression ---------------------------------------------------------------------------


def decompress(data: bytes, method: str) -> bytes:
    """Decompress one stream; trailing bytes after it (padding, a size word) are ignored."""
    try:
        if method == "gzip":
            return _gunzip(data)
        if method == "xz":
            return _unxz(data)
        if method == "bzip2":
            return bz2.BZ2Decompressor().decompress(data)
    except (lzma.LZMAError, OSError, EOFError, zlib.error) as exc:
        raise KernelFormatError(f"corrupt {method} data: {exc}") from None
    if method in DECOMPRESS_TOOLS:
        return _decompress_with_tool(data, method)
    raise KernelFormatError(f"unsupported compression {method!r}")


def _decompress_with_tool(data: bytes, method: str) -> bytes:
    argv = DECOMPRESS_TOOLS[method]
    if shutil.which(argv[0]) is None:
        raise KernelFormatError(
            f"the kernel is {method}-compressed and `{argv[0]}` is not installed: {TOOL_HINT}"
        )
    proc = subprocess.run(argv, input=data, capture_output=True, check=False)
    # zstd/lz4 exit non-zero on trailing garbage after a complete frame (zboot appends a
    # size word); the decompressed output is still complete then.
    if not proc.stdout:
        err = proc.stderr.decode(errors="replace").strip()
        raise KernelFormatError(f"`{argv[0]}` could not decompress the kernel: {err}")
    return proc.stdout


def _unxz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _gunzip(data: bytes) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return bytes(d.decompress(data))


def bzimage_payload(bzimage: bytes) -> bytes | None:
    """The compressed payload the setup header points at (boot protocol >= 2.08), or None."""
    if len(bzimage) < 0x250 or struct.unpack_from("<H", bzimage, 0x206)[0] < 0x208:
        return None
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if length == 0 or start + length > len(bzimage):
        return None
    return bzimage[start : start + length]


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF vmlinux embedded (compressed) in a bzImage: gzip, xz, zstd, lz4 or bzip2.

    The payload the header points at is tried first; older or odd images are scanned for
    each format's magic.
    """
    if not is_bzimage(bzimage):
        raise KernelFormatError("not a bzImage (no 'HdrS' setup header)")
    payload = bzimage_payload(bzimage)
    method = compression_of(payload) if payload else None
    if payload is not None and method is not None:
        try:
            out = decompress(payload, method)
        except KernelFormatError:
            out = b""
        if out[:4] == elf.ELF_MAGIC:
            return out
    errors: list[str] = []
    for name, magic in COMPRESSION_MAGICS:
        start = bzimage.find(magic)
        while start != -1:
            try:
                out = decompress(bzimage[start:], name)
            except KernelFormatError as exc:
                out = b""
                if "not installed" in str(exc):
                    errors.append(str(exc))
                    break
            if out[:4] == elf.ELF_MAGIC:
                return out
            start = bzimage.find(magic, start + 1)
    why = f" ({'; '.join(errors)})" if errors else ""
    raise KernelFormatError(
        f"no compressed ELF vmlinux (gzip, xz, zstd, lz4, bzip2) found inside the bzImage{why}"
    )


@dataclass(frozen=True)
class Zboot:
    """The header fields of an EFI zboot image."""

    payload_offset: int
    payload_size: int
    compression: str  # as the header names it: gzip, zstd22, xzkern, lz4, ...


def zboot_header(data: bytes) -> Zboot:
    if not is_efi_zboot(data):
        raise KernelFormatError("not an EFI zboot image (no 'MZ' + 'zimg' header)")
    offset, size = struct.unpack_from("<II", data, 8)
    comp = data[24:56].split(b"\0", 1)[0].decode(errors="replace")
    if offset + size > len(data) or size == 0:
        raise KernelFormatError(
            f"truncated EFI zboot image: payload {offset}+{size} > file {len(data)}"
        )
    return Zboot(offset, size, comp)


def arm64_image(data: bytes) -> bytes:
    """The raw arm64 `Image` inside `data` (already raw, compressed, or EFI zboot)."""
    layers = []
    for _ in range(3):
        if is_arm64_image(data):
            return data
        if is_efi_zboot(data):
            hdr = zboot_header(data)
            data = data[hdr.payload_offset : hdr.payload_offset + hdr.payload_size]
            layers.append(f"EFI zboot ({hdr.compression})")
            continue
        method = compression_of(data)
        if method is None:
            break
        data = decompress(data, method)
        layers.append(method)
    inside = " inside " + " inside ".join(reversed(layers)) if layers else ""
    what = _detect_bytes(data).value
    raise KernelFormatError(f"not an arm64 kernel: found {what}{inside}, not an arm64 Image")


# ---- description ---------------------------------------------------------------------------


@dataclass
class KernelInfo:
    """What a kernel file is, and what each driver can boot it as."""

    path: str
    size: int
    format: KernelFormat
    arch: str | None  # x86_64 | aarch64 | None (unknown)
    layers: list[str] = field(default_factory=list)  # e.g. ["EFI zboot (gzip)", "gzip"]
    inner: KernelFormat | None = None  # what the layers hold
    image_size: int | None = None  # size of the innermost kernel
    error: str | None = None
    boot: dict[str, str] = field(default_factory=dict)  # "driver/arch" -> how (or "no: why")

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "size": self.size,
            "format": self.format.value,
            "arch": self.arch,
            "layers": self.layers,
            "inner": self.inner.value if self.inner else None,
            "image_size": self.image_size,
            "error": self.error,
            "boot": self.boot,
        }


def _elf_arch(data: bytes) -> str | None:
    if len(data) < 20:
        return None
    machine = struct.unpack_from("<H", data, 18)[0]
    return {EM_X86_64: "x86_64", EM_AARCH64: "aarch64"}.get(machine)


def describe(path: Path) -> KernelInfo:
    data = path.read_bytes()
    fmt = _detect_bytes(data)
    info = KernelInfo(str(path), len(data), fmt, None)
    inner_data = data
    try:
        for _ in range(3):
            if is_efi_zboot(inner_data):
                hdr = zboot_header(inner_data)
                info.layers.append(f"EFI zboot ({hdr.compression})")
                inner_data = inner_data[hdr.payload_offset : hdr.payload_offset + hdr.payload_size]
                continue
            method = compression_of(inner_data)
            if method is None or is_arm64_image(inner_data):
                break
            info.layers.append(method)
            inner_data = decompress(inner_data, method)
    except KernelFormatError as exc:
        info.error = str(exc)
    inner = _detect_bytes(inner_data)
    if info.layers and info.error is None:
        info.inner, info.image_size = inner, len(inner_data)
    if inner in (KernelFormat.ELF, KernelFormat.ELF_PVH):
        info.arch = _elf_arch(inner_data)
    elif inner == KernelFormat.BZIMAGE:
        info.arch = "x86_64"
        payload = bzimage_payload(inner_data)
        method = compression_of(payload) if payload else None
        if method is not None and not info.layers:
            info.layers.append(f"bzImage payload: {method}-compressed vmlinux")
    elif inner == KernelFormat.ARM64_IMAGE:
        info.arch = "aarch64"
    return info


def arm64_decompressible(info: KernelInfo) -> bool:
    """A compressed or EFI zboot arm64 kernel, with a raw Image inside."""
    return info.inner == KernelFormat.ARM64_IMAGE and info.format in (
        KernelFormat.COMPRESSED,
        KernelFormat.EFI_ZBOOT,
    )


def prepare_arm64_image(src: Path, dest: Path) -> Path:
    """`src` itself when it is a raw Image, else its decompressed Image written to `dest`.

    `dest` is rewritten only when `src` changed since (size + mtime recorded beside it), so a
    restart costs nothing. The write is atomic.
    """
    st = src.stat()
    stamp = f"{src}\0{st.st_size}\0{st.st_mtime_ns}"
    with src.open("rb") as f:
        head = f.read(0x40)
    if is_arm64_image(head):
        return src
    stamp_file = dest.with_name(dest.name + ".source")
    if dest.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return dest
    image = arm64_image(src.read_bytes())
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(image)
    tmp.replace(dest)
    stamp_file.write_text(stamp)
    return dest
