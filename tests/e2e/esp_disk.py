"""A UEFI-bootable disk laid out as cloud images are: a GPT with one EFI system partition
holding systemd-boot (as \\EFI\\BOOT\\BOOTX64.EFI), a Boot Loader Spec entry, and the tiny
guest's kernel (Debian's, with its EFI stub) and initramfs. Made with the real tools
(mkfs.vfat, mtools, systemd-boot from Debian); the GPT is written here (a few fixed fields
and two CRC32s) because sfdisk is not in a minimal Debian."""

from __future__ import annotations

import shutil
import struct
import subprocess
import uuid
import zlib
from pathlib import Path

SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
SECTOR = 512
ESP_START = 2048  # LBA: 1 MiB
ESP_SECTORS = 64 * 2048  # 64 MiB
ENTRIES = 128
ENTRY_SIZE = 128
TOOLS = ("mkfs.vfat", "mmd", "mcopy")


def missing_tools() -> list[str]:
    out = [t for t in TOOLS if shutil.which(t) is None and not Path(f"/sbin/{t}").exists()]
    return out + ([str(SYSTEMD_BOOT)] if not SYSTEMD_BOOT.exists() else [])


def _tool(name: str) -> str:
    return shutil.which(name) or f"/sbin/{name}"


def fetch_systemd_boot(arch: str, work: Path) -> Path:
    """systemd-boot for another architecture's ESP, from Debian (vmkit's package sources)."""
    from vmkit.guest.build import package_source
    from vmkit.paths import cache_dir

    work.mkdir(parents=True, exist_ok=True)
    source = package_source(arch, cache_dir())
    source.prepare(lambda _m: None)
    for _version, deb in source.fetch(["systemd-boot-efi"], work, lambda _m: None).values():
        source.unpack(deb, work / "tree")
    name = {"arm64": "aa64", "amd64": "x64"}[arch]
    return work / "tree" / "usr/lib/systemd/boot/efi" / f"systemd-boot{name}.efi"


def make_esp(
    fat: Path,
    kernel: Path,
    initrd: Path,
    options: str,
    loader: Path = SYSTEMD_BOOT,
    removable_name: str = "BOOTX64.EFI",
) -> None:
    subprocess.run([_tool("mkfs.vfat"), "-C", str(fat), str(ESP_SECTORS // 2)], check=True,
                   capture_output=True)  # fmt: skip
    img = ["-i", str(fat)]
    subprocess.run(
        ["mmd", *img, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"], check=True
    )
    entry = fat.with_name("vmkit.conf")
    entry.write_text(f"title vmkit tiny guest\nlinux /vmlinuz\ninitrd /initrd\noptions {options}\n")
    loader_conf = fat.with_name("loader.conf")
    loader_conf.write_text("default vmkit.conf\ntimeout 0\n")
    for src, dst in (
        (loader, f"::/EFI/BOOT/{removable_name}"),
        (kernel, "::/vmlinuz"),
        (initrd, "::/initrd"),
        (entry, "::/loader/entries/vmkit.conf"),
        (loader_conf, "::/loader/loader.conf"),
    ):
        subprocess.run(["mcopy", *img, str(src), dst], check=True)


def _header(lba: int, backup: int, entries_lba: int, last: int, disk: uuid.UUID, crc: int) -> bytes:
    fields = [b"EFI PART", 0x00010000, 92, 0, 0, lba, backup, 34, last, disk.bytes_le,
              entries_lba, ENTRIES, ENTRY_SIZE, crc]  # fmt: skip
    fmt = "<8sIIIIQQQQ16sQIII"
    head = struct.pack(fmt, *fields)
    fields[3] = zlib.crc32(head)
    return struct.pack(fmt, *fields).ljust(SECTOR, b"\0")


def write_gpt_disk(disk: Path, fat: Path) -> None:
    """disk = protective MBR + GPT + the FAT image as partition 1 + backup GPT."""
    total = ESP_START + ESP_SECTORS + 2048
    last = total - 34
    entry = struct.pack(
        "<16s16sQQQ72s",
        ESP_TYPE.bytes_le,
        uuid.uuid4().bytes_le,
        ESP_START,
        ESP_START + ESP_SECTORS - 1,
        0,
        "EFI system partition".encode("utf-16-le"),
    )
    table = entry.ljust(ENTRIES * ENTRY_SIZE, b"\0")
    crc = zlib.crc32(table)
    guid = uuid.uuid4()
    mbr = bytearray(SECTOR)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\0\2\0", 0xEE, b"\xff\xff\xff", 1, total - 1)
    mbr[510:512] = b"\x55\xaa"
    with disk.open("wb") as f:
        f.truncate(total * SECTOR)
        f.write(bytes(mbr))
        f.write(_header(1, total - 1, 2, last, guid, crc))
        f.write(table)
        f.seek(ESP_START * SECTOR)
        f.write(fat.read_bytes())
        f.seek((total - 33) * SECTOR)
        f.write(table)
        f.write(_header(total - 1, 1, total - 33, last, guid, crc))


def make_bootable_disk(
    disk: Path,
    kernel: Path,
    initrd: Path,
    options: str,
    loader: Path = SYSTEMD_BOOT,
    removable_name: str = "BOOTX64.EFI",
) -> Path:
    fat = disk.with_suffix(".fat")
    make_esp(fat, kernel, initrd, options, loader, removable_name)
    write_gpt_disk(disk, fat)
    fat.unlink()
    return disk
