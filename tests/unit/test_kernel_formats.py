"""Kernel formats on real kernels: Debian's arm64 Image (scripts/fetch_test_kernels.py), the
same Image compressed by the real gzip/zstd/xz/lz4 tools and wrapped in EFI zboot headers,
and Debian's amd64 bzImage/vmlinux from the tiny guest."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from vmkit.drivers import boot_support
from vmkit.storage import kernel
from vmkit.storage.kernel import KernelFormat, KernelFormatError

CACHE = Path(os.environ.get("VMKIT_CACHE") or Path.home() / ".cache" / "vmkit") / "test-kernels"
METHODS = {"gz": "gzip", "zst": "zstd", "xz": "xz", "lz4": "lz4"}
ZBOOT_NAMES = {"gz": "gzip", "zst": "zstd22", "xz": "xzkern", "lz4": "lz4"}


@pytest.fixture(scope="module")
def kernels() -> Path:
    if not (CACHE / "Image").is_file():
        pytest.skip(
            f"no test kernels in {CACHE}: run scripts/fetch_test_kernels.py (setup.sh does)"
        )
    return CACHE


@pytest.fixture(scope="module")
def raw(kernels: Path) -> bytes:
    return (kernels / "Image").read_bytes()


def test_the_real_arm64_image(kernels: Path, raw: bytes) -> None:
    assert kernel.detect(kernels / "Image") == KernelFormat.ARM64_IMAGE
    info = kernel.describe(kernels / "Image")
    assert (info.arch, info.layers, info.inner) == ("aarch64", [], None)
    assert boot_support(info)["vfkit/aarch64"] == "yes"
    assert kernel.arm64_image(raw) is raw


@pytest.mark.parametrize("ext", sorted(METHODS))
def test_compressed_vmlinuz_unpacks_to_the_same_image(kernels: Path, raw: bytes, ext: str) -> None:
    path = kernels / f"Image.{ext}"
    assert kernel.detect(path) == KernelFormat.COMPRESSED
    assert kernel.compression_of(path.read_bytes()) == METHODS[ext]
    info = kernel.describe(path)
    assert info.layers == [METHODS[ext]]
    assert (info.inner, info.arch, info.image_size) == (
        KernelFormat.ARM64_IMAGE,
        "aarch64",
        len(raw),
    )
    assert boot_support(info)["vfkit/aarch64"].startswith("yes: vmkit decompresses it")
    assert kernel.arm64_image(path.read_bytes()) == raw


@pytest.mark.parametrize("ext", sorted(METHODS))
def test_efi_zboot_unpacks_to_the_same_image(kernels: Path, raw: bytes, ext: str) -> None:
    path = kernels / f"zboot-{ext}.efi"
    data = path.read_bytes()
    assert kernel.detect(path) == KernelFormat.EFI_ZBOOT
    hdr = kernel.zboot_header(data)
    assert hdr.compression == ZBOOT_NAMES[ext]
    assert kernel.describe(path).layers == [f"EFI zboot ({ZBOOT_NAMES[ext]})", METHODS[ext]]
    assert kernel.arm64_image(data) == raw


def test_bzip2_vmlinuz(raw: bytes) -> None:
    small = raw[: 1 << 20]  # the header and first MiB are enough to be an Image
    assert kernel.arm64_image(bz2.compress(small)) == small


def test_prepare_writes_the_image_once_and_again_when_the_source_changes(
    kernels: Path, raw: bytes, tmp_path: Path
) -> None:
    src = tmp_path / "vmlinuz"
    src.write_bytes((kernels / "Image.gz").read_bytes())
    dest = tmp_path / "vm" / "Image"
    dest.parent.mkdir()
    assert kernel.prepare_arm64_image(src, dest) == dest
    assert dest.read_bytes() == raw
    first = dest.stat().st_mtime_ns
    assert kernel.prepare_arm64_image(src, dest) == dest
    assert dest.stat().st_mtime_ns == first  # cached
    src.write_bytes((kernels / "zboot-zst.efi").read_bytes())
    os.utime(src, ns=(first + 10**9, first + 10**9))
    kernel.prepare_arm64_image(src, dest)
    assert dest.read_bytes() == raw and dest.stat().st_mtime_ns != first
    assert not dest.with_name("Image.tmp").exists()
    assert kernel.prepare_arm64_image(kernels / "Image", dest) == kernels / "Image"


# ---- what is refused, and how it says so ---------------------------------------------------------


def _zboot(payload: bytes, comp: str = "gzip", size: int | None = None) -> bytes:
    hdr = bytearray(0x200)
    hdr[0:4], hdr[4:8] = b"MZ\0\0", b"zimg"
    struct.pack_into("<II", hdr, 8, 0x200, len(payload) if size is None else size)
    hdr[24 : 24 + len(comp)] = comp.encode()
    return bytes(hdr) + payload


def test_a_truncated_zboot_image_is_refused() -> None:
    with pytest.raises(KernelFormatError, match="truncated EFI zboot image"):
        kernel.arm64_image(_zboot(b"abc", size=4096))


def test_a_zboot_of_something_else_names_what_it_found() -> None:
    with pytest.raises(
        KernelFormatError, match=r"found unknown inside gzip inside EFI zboot \(gzip\)"
    ):
        kernel.arm64_image(_zboot(gzip.compress(b"hello" * 100)))


def test_an_x86_bzimage_is_not_an_arm64_kernel(guest_bzimage: Path) -> None:
    with pytest.raises(KernelFormatError, match="found bzimage inside gzip, not an arm64 Image"):
        kernel.arm64_image(gzip.compress(guest_bzimage.read_bytes(), compresslevel=1))


def test_corrupt_gzip_is_an_error_not_a_crash() -> None:
    with pytest.raises(KernelFormatError, match="corrupt gzip data"):
        kernel.arm64_image(b"\x1f\x8b\x08" + b"\xff" * 64)


def test_a_missing_zstd_tool_is_named_with_the_install_command(
    kernels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        KernelFormatError,
        match=r"zstd-compressed and `zstd` is not installed.*apt-get install zstd",
    ):
        kernel.arm64_image((kernels / "Image.zst").read_bytes()[: 1 << 16])


# ---- x86 ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guest_bzimage() -> Path:
    from vmkit.guest.build import find_built

    guest = find_built()
    if guest is None or not guest.bzimage.is_file():
        pytest.skip("no tiny guest built in the cache (`vmkit guest build`)")
    return guest.bzimage


def test_the_real_amd64_kernels_describe_as_x86(guest_bzimage: Path) -> None:
    info = kernel.describe(guest_bzimage)
    assert (info.format, info.arch) == (KernelFormat.BZIMAGE, "x86_64")
    assert boot_support(info)["qemu/x86_64"] == "yes"
    vmlinux = guest_bzimage.with_name("vmlinux")
    if vmlinux.is_file():
        info = kernel.describe(vmlinux)
        assert (info.format, info.arch) == (KernelFormat.ELF_PVH, "x86_64")


# ---- the CLI ------------------------------------------------------------------------------------


def vmkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmkit.cli", *args], capture_output=True, text=True, check=False
    )


def test_cli_inspect_json_and_text(kernels: Path) -> None:
    proc = vmkit("kernel", "inspect", "--json", str(kernels / "zboot-gz.efi"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["format"] == "efi-zboot" and data["inner"] == "arm64-image"
    assert data["layers"] == ["EFI zboot (gzip)", "gzip"]
    text = vmkit("kernel", "inspect", str(kernels / "Image.xz")).stdout
    assert "format:  compressed = xz > arm64-image" in text
    assert "vfkit/aarch64:" in text


def test_cli_extract_writes_the_raw_image(kernels: Path, raw: bytes, tmp_path: Path) -> None:
    out = tmp_path / "Image"
    proc = vmkit("kernel", "extract", str(kernels / "zboot-lz4.efi"), str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == raw


def test_cli_refuses_non_kernels_with_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    proc = vmkit("kernel", "extract", str(junk), str(tmp_path / "out"))
    assert proc.returncode == 2 and "not an arm64 kernel" in proc.stderr
    proc = vmkit("kernel", "inspect", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def _rebuild_bzimage(real: bytes, payload: bytes) -> bytes:
    """The real bzImage's setup code and header around another payload (as a distro built
    with CONFIG_KERNEL_ZSTD/LZ4 ships it): payload_length updated, offset kept."""
    setup_sects = real[0x1F1] or 4
    offset = struct.unpack_from("<I", real, 0x248)[0]
    head = bytearray(real[: (setup_sects + 1) * 512 + offset])
    struct.pack_into("<I", head, 0x24C, len(payload))
    return bytes(head) + payload + struct.pack("<I", 0) + b"\0" * 4096


@pytest.mark.parametrize(
    "argv",
    [["zstd", "-q", "-1", "-c"], ["lz4", "-l", "-q", "-1", "-c"], ["gzip", "-1", "-c"]],
    ids=["zstd", "lz4", "gzip"],
)
def test_vmlinux_from_a_bzimage_with_another_payload(guest_bzimage: Path, argv: list[str]) -> None:
    vmlinux = guest_bzimage.with_name("vmlinux")
    if not vmlinux.is_file():
        pytest.skip(f"no vmlinux beside {guest_bzimage}")
    elf_bytes = vmlinux.read_bytes()
    payload = subprocess.run(argv, input=elf_bytes, capture_output=True, check=True).stdout
    rebuilt = _rebuild_bzimage(guest_bzimage.read_bytes(), payload)
    assert kernel.bzimage_payload(rebuilt) == payload
    assert kernel.extract_vmlinux(rebuilt) == elf_bytes


def test_the_real_bzimage_payload_is_found_through_its_header(guest_bzimage: Path) -> None:
    payload = kernel.bzimage_payload(guest_bzimage.read_bytes())
    assert payload is not None and kernel.compression_of(payload) == "xz"
