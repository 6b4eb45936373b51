"""storage/elf.py and storage/kernel.py on hand-built ELF64 files, bzImages and the real kernel."""

from __future__ import annotations

import gzip
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vmkit.storage import elf, kernel
from vmkit.storage.kernel import KernelFormat, KernelFormatError

PT_LOAD = 1
XEN_PHYS32 = kernel.XEN_ELFNOTE_PHYS32_ENTRY


def _note(name: str, ntype: int, desc: bytes) -> bytes:
    raw_name = name.encode() + b"\0"
    return struct.pack("<III", len(raw_name), len(desc), ntype) + _pad4(raw_name) + _pad4(desc)


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def build_elf(
    sections: dict[str, bytes] | None = None,
    notes: list[tuple[str, int, bytes]] | None = None,
    extra_load_segment: bool = True,
) -> bytes:
    """A little-endian ELF64 with the given sections and one PT_NOTE segment of `notes`."""
    sections = sections or {}
    phdrs: list[tuple[int, int, int]] = []  # (type, offset, size)
    body = bytearray()
    base = 64 + 56 * ((1 if notes else 0) + (1 if extra_load_segment else 0))

    if extra_load_segment:
        phdrs.append((PT_LOAD, 0, 64))  # a non-note segment the parser must skip
    if notes:
        blob = b"".join(_note(*n) for n in notes)
        phdrs.append((elf.PT_NOTE, base + len(body), len(blob)))
        body += blob

    names = ["", *sections, ".shstrtab"]
    shstrtab = bytearray()
    name_offsets = []
    for name in names:
        name_offsets.append(len(shstrtab))
        shstrtab += name.encode() + b"\0"
    placed: list[tuple[int, int]] = [(0, 0)]
    for data in sections.values():
        placed.append((base + len(body), len(data)))
        body += data
    placed.append((base + len(body), len(shstrtab)))
    body += shstrtab
    body += b"\0" * (-len(body) % 8)
    shoff = base + len(body)

    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        b"\x7fELF\x02\x01\x01" + b"\0" * 9,
        1,  # ET_REL
        62,  # EM_X86_64
        1,
        0,
        64 if phdrs else 0,
        shoff,
        0,
        64,
        56,
        len(phdrs),
        64,
        len(names),
        len(names) - 1,
    )
    out = bytearray(header)
    for ptype, offset, size in phdrs:
        out += struct.pack("<IIQQQQQQ", ptype, 4, offset, 0, 0, size, size, 4)
    assert len(out) == base
    out += body
    for i, (offset, size) in enumerate(placed):
        sh_type = 0 if i == 0 else 3 if i == len(names) - 1 else 1
        out += struct.pack("<IIQQQQIIQQ", name_offsets[i], sh_type, 0, 0, offset, size, 0, 0, 1, 0)
    return bytes(out)


PVH_NOTE = ("Xen", XEN_PHYS32, struct.pack("<I", 0x1000000))


# ---- elf.py --------------------------------------------------------------------------------


def test_sections_are_listed_with_names_offsets_and_sizes() -> None:
    data = build_elf({".text": b"\x90" * 10, ".modinfo": b"license=GPL\0"})
    secs = elf.sections(data)
    assert [s.name for s in secs] == ["", ".text", ".modinfo", ".shstrtab"]
    text = secs[1]
    assert data[text.offset : text.offset + text.size] == b"\x90" * 10


def test_section_bytes_finds_by_name_or_none() -> None:
    data = build_elf({".a": b"AAA", ".b": b"BB"})
    assert elf.section_bytes(data, ".b") == b"BB"
    assert elf.section_bytes(data, ".c") is None


def test_modinfo_parses_key_values_with_repeats() -> None:
    blob = b"depends=a,b\0license=GPL\0alias=pci:v1\0alias=pci:v2\0\0\0vermagic=6.1 SMP\0"
    info = elf.modinfo(build_elf({".text": b"", ".modinfo": blob}))
    assert info == {
        "depends": ["a,b"],
        "license": ["GPL"],
        "alias": ["pci:v1", "pci:v2"],
        "vermagic": ["6.1 SMP"],
    }


def test_modinfo_keeps_empty_values_and_equals_signs_in_values() -> None:
    info = elf.modinfo(build_elf({".modinfo": b"depends=\0parm=x:int=1\0"}))
    assert info == {"depends": [""], "parm": ["x:int=1"]}


def test_modinfo_of_an_elf_without_the_section_is_empty() -> None:
    assert elf.modinfo(build_elf({".text": b"\xc3"})) == {}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_modinfo_of_a_gcc_compiled_object(tmp_path: Path) -> None:
    source = tmp_path / "mod.c"
    source.write_text(
        'static const char info[] __attribute__((section(".modinfo"), used)) =\n'
        '    "depends=a,b\\0license=GPL";\n'
        "int answer(void) { return 42; }\n"
    )
    obj = tmp_path / "mod.o"
    proc = subprocess.run(
        ["gcc", "-c", "-O0", "-o", str(obj), str(source)], capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert elf.modinfo(obj.read_bytes()) == {"depends": ["a,b"], "license": ["GPL"]}


def test_notes_lists_every_note_with_alignment() -> None:
    notes = [("GNU", 3, b"\x01\x02\x03\x04\x05"), ("Linux", 1, b"abc"), PVH_NOTE]
    assert list(elf.notes(build_elf(notes=notes))) == notes


def test_notes_of_an_elf_without_note_segments_is_empty() -> None:
    assert list(elf.notes(build_elf({".text": b""}))) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"MZ\x90\x00" + b"\0" * 100, "bad magic"),
        (b"\x7fELF\x01\x01\x01" + b"\0" * 100, "little-endian ELF64"),
        (b"\x7fELF\x02\x02\x01" + b"\0" * 100, "little-endian ELF64"),
    ],
)
def test_non_elf64_le_input_raises_elf_error(data: bytes, message: str) -> None:
    with pytest.raises(elf.ElfError, match=message):
        elf.sections(data)
    with pytest.raises(elf.ElfError, match=message):
        list(elf.notes(data))


# ---- kernel.py: detection ------------------------------------------------------------------


def _bzimage(payload: bytes) -> bytes:
    setup = bytearray(0x400)
    setup[0x1FE:0x200] = b"\x55\xaa"
    setup[0x202:0x206] = b"HdrS"
    return bytes(setup) + b"\x00" * 64 + payload + b"\x00" * 32


def test_has_pvh_note_needs_the_xen_phys32_entry_note() -> None:
    assert kernel.has_pvh_note(build_elf(notes=[("GNU", 3, b"id"), PVH_NOTE]))
    assert not kernel.has_pvh_note(build_elf(notes=[("Xen", 0x11, b"\0" * 4)]))
    assert not kernel.has_pvh_note(build_elf(notes=[("GNU", XEN_PHYS32, b"\0" * 4)]))
    assert not kernel.has_pvh_note(build_elf())


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (build_elf(notes=[PVH_NOTE]), KernelFormat.ELF_PVH),
        (build_elf(notes=[("GNU", 3, b"x")]), KernelFormat.ELF),
        (_bzimage(b"payload"), KernelFormat.BZIMAGE),
        (b"\x7fELF", KernelFormat.UNKNOWN),
        (b"\x7fELF\x01\x01\x01" + b"\0" * 100, KernelFormat.UNKNOWN),
        (b"just some text\n" * 100, KernelFormat.UNKNOWN),
        (b"", KernelFormat.UNKNOWN),
    ],
    ids=["elf-pvh", "elf", "bzimage", "bare-magic", "elf32", "text", "empty"],
)
def test_detect(tmp_path: Path, content: bytes, expected: KernelFormat) -> None:
    path = tmp_path / "kernel"
    path.write_bytes(content)
    assert kernel.detect(path) == expected


def test_detect_of_a_truncated_elf64_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "kernel"
    path.write_bytes(build_elf(notes=[PVH_NOTE])[:30])
    assert kernel.detect(path) == KernelFormat.UNKNOWN


def test_is_bzimage_needs_hdrs_at_0x202() -> None:
    assert kernel.is_bzimage(_bzimage(b""))
    assert not kernel.is_bzimage(b"\0" * 0x202 + b"HdrS")  # too short to hold the header
    assert not kernel.is_bzimage(b"\0" * 0x201 + b"HdrS" + b"\0" * 10)


# ---- kernel.py: extract_vmlinux ------------------------------------------------------------

VMLINUX = build_elf({".text": bytes(range(256)) * 16}, notes=[PVH_NOTE])


def test_extract_vmlinux_from_an_xz_bzimage() -> None:
    payload = lzma.compress(VMLINUX, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    assert kernel.extract_vmlinux(_bzimage(payload)) == VMLINUX


def test_extract_vmlinux_from_a_gzip_bzimage() -> None:
    assert kernel.extract_vmlinux(_bzimage(gzip.compress(VMLINUX, mtime=0))) == VMLINUX


def test_extracted_vmlinux_keeps_its_pvh_note() -> None:
    payload = lzma.compress(VMLINUX, format=lzma.FORMAT_XZ)
    assert kernel.has_pvh_note(kernel.extract_vmlinux(_bzimage(payload)))


def test_extract_vmlinux_skips_false_xz_magic_before_the_payload() -> None:
    decoy = b"\xfd7zXZ\x00" + b"not really xz" * 4
    payload = lzma.compress(VMLINUX, format=lzma.FORMAT_XZ)
    assert kernel.extract_vmlinux(_bzimage(decoy + payload)) == VMLINUX


def test_extract_vmlinux_skips_false_gzip_magic_before_the_payload() -> None:
    decoy = b"\x1f\x8b\x08" + b"\xff" * 40  # not a valid deflate stream
    assert kernel.extract_vmlinux(_bzimage(decoy + gzip.compress(VMLINUX))) == VMLINUX


def test_extract_vmlinux_ignores_compressed_data_that_is_not_elf() -> None:
    payload = lzma.compress(b"not an elf" * 100, format=lzma.FORMAT_XZ)
    with pytest.raises(KernelFormatError, match="no compressed ELF vmlinux"):
        kernel.extract_vmlinux(_bzimage(payload))


def test_extract_vmlinux_of_a_corrupt_zstd_payload_says_what_it_looked_for() -> None:
    zstd_like = b"\x28\xb5\x2f\xfd" + b"\0" * 100
    with pytest.raises(KernelFormatError, match=r"gzip, xz, zstd, lz4, bzip2"):
        kernel.extract_vmlinux(_bzimage(zstd_like))


@pytest.mark.parametrize("data", [b"", VMLINUX, b"\0" * 4096, gzip.compress(VMLINUX)])
def test_extract_vmlinux_of_a_non_bzimage_raises(data: bytes) -> None:
    with pytest.raises(KernelFormatError, match="not a bzImage"):
        kernel.extract_vmlinux(data)


# ---- the real tiny-guest kernel ------------------------------------------------------------


@pytest.fixture(scope="module")
def guest_kernel() -> tuple[Path, Path]:
    from vmkit.guest.build import find_built

    guest = find_built()
    if guest is None:
        pytest.skip("no tiny guest built in the cache (vmkit.guest.build.find_built() is None)")
    if not guest.vmlinux.is_file() or not guest.bzimage.is_file():
        pytest.skip(f"the built guest in {guest.dir} has no vmlinux/vmlinuz pair")
    return guest.bzimage, guest.vmlinux


def test_real_guest_kernels_are_detected(guest_kernel: tuple[Path, Path]) -> None:
    bzimage, vmlinux = guest_kernel
    assert kernel.detect(bzimage) == KernelFormat.BZIMAGE
    assert kernel.detect(vmlinux) == KernelFormat.ELF_PVH
    assert kernel.has_pvh_note(vmlinux.read_bytes())


def test_real_guest_vmlinux_is_what_extract_vmlinux_gives(guest_kernel: tuple[Path, Path]) -> None:
    bzimage, vmlinux = guest_kernel
    assert kernel.extract_vmlinux(bzimage.read_bytes()) == vmlinux.read_bytes()
