"""guest/cpio.py: deterministic newc archives that parse back and extract with cpio(1)."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmkit.guest import cpio

HEADER_LEN = 110
FIELDS = (
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)


@dataclass
class Parsed:
    name: str
    data: bytes
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    rdevmajor: int
    rdevminor: int


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_newc(blob: bytes) -> list[Parsed]:
    """A strict newc reader: magic, hex fields, NUL-terminated names, zeroed 4-byte padding."""
    out: list[Parsed] = []
    pos = 0
    while True:
        assert blob[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        raw = blob[pos + 6 : pos + HEADER_LEN]
        values = {k: int(raw[i * 8 : i * 8 + 8], 16) for i, k in enumerate(FIELDS)}
        assert all(c in b"0123456789abcdef" for c in raw), "header fields must be lowercase hex"
        name_start = pos + HEADER_LEN
        name_end = name_start + values["namesize"]
        raw_name = blob[name_start:name_end]
        assert raw_name.endswith(b"\0") and b"\0" not in raw_name[:-1]
        data_start = _align4(name_end)
        assert blob[name_end:data_start] == b"\0" * (data_start - name_end)
        data_end = data_start + values["filesize"]
        data = blob[data_start:data_end]
        assert len(data) == values["filesize"], "archive truncated"
        next_pos = _align4(data_end)
        assert blob[data_end:next_pos] == b"\0" * (next_pos - data_end)
        assert values["check"] == 0
        pos = next_pos
        name = raw_name[:-1].decode()
        if name == "TRAILER!!!":
            assert pos == len(blob), "bytes after the trailer"
            return out
        out.append(
            Parsed(
                name,
                data,
                values["ino"],
                values["mode"],
                values["uid"],
                values["gid"],
                values["nlink"],
                values["mtime"],
                values["rdevmajor"],
                values["rdevminor"],
            )
        )


SAMPLE = [
    cpio.directory("bin"),
    cpio.directory("etc", 0o700),
    cpio.file("init", b"#!/bin/sh\necho hi\n", 0o755),
    cpio.file("etc/motd", b"hello"),
    cpio.file("etc/empty", b""),
    cpio.symlink("bin/sh", "busybox"),
    cpio.file("bin/busybox", bytes(range(256)) * 3, 0o755),
    cpio.chardev("dev/console", 5, 1),
]


def test_same_entries_in_any_order_give_identical_bytes() -> None:
    reference = cpio.write(SAMPLE)
    shuffled = list(SAMPLE)
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert cpio.write(shuffled) == reference


def test_archive_parses_back_sorted_with_names_modes_and_data() -> None:
    parsed = parse_newc(cpio.write(SAMPLE, mtime=1_700_000_000))
    by_name = {p.name: p for p in parsed}
    assert [p.name for p in parsed] == sorted(e.path for e in SAMPLE)
    for entry in SAMPLE:
        got = by_name[entry.path]
        assert got.mode == entry.mode
        assert got.mtime == 1_700_000_000
        assert (got.uid, got.gid) == (0, 0)
        if not stat.S_ISCHR(entry.mode):
            assert got.data == entry.data
    assert by_name["bin/sh"].data == b"busybox"
    assert stat.S_IMODE(by_name["etc"].mode) == 0o700
    assert stat.S_ISDIR(by_name["etc"].mode)


def test_inodes_are_unique_and_nonzero() -> None:
    inos = [p.ino for p in parse_newc(cpio.write(SAMPLE))]
    assert len(set(inos)) == len(inos)
    assert 0 not in inos


def test_directories_have_two_links_others_one() -> None:
    for p in parse_newc(cpio.write(SAMPLE)):
        assert p.nlink == (2 if stat.S_ISDIR(p.mode) else 1)


def test_chardev_carries_major_minor_in_rdev_and_no_data() -> None:
    (console,) = [p for p in parse_newc(cpio.write(SAMPLE)) if p.name == "dev/console"]
    assert stat.S_ISCHR(console.mode)
    assert (console.rdevmajor, console.rdevminor) == (5, 1)
    assert console.data == b""


def test_empty_archive_is_just_the_trailer() -> None:
    blob = cpio.write([])
    assert parse_newc(blob) == []
    assert b"TRAILER!!!" in blob
    assert len(blob) % 4 == 0


def test_mtime_changes_the_bytes_and_nothing_else() -> None:
    a, b = parse_newc(cpio.write(SAMPLE, 0)), parse_newc(cpio.write(SAMPLE, 99))
    assert [(p.name, p.mode, p.data) for p in a] == [(p.name, p.mode, p.data) for p in b]
    assert {p.mtime for p in b} == {99}


path_part = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)
entries_strategy = st.dictionaries(
    keys=st.lists(path_part, min_size=1, max_size=3)
    .map("/".join)
    .filter(lambda p: all(part not in (".", "..") for part in p.split("/"))),
    values=st.tuples(st.binary(max_size=64), st.sampled_from([0o644, 0o600, 0o755, 0o4755])),
    max_size=10,
)


@settings(max_examples=100, deadline=None)
@given(files=entries_strategy, seed=st.integers(0, 2**32))
def test_any_files_round_trip_and_order_does_not_matter(
    files: dict[str, tuple[bytes, int]], seed: int
) -> None:
    entries = [cpio.file(path, data, perm) for path, (data, perm) in files.items()]
    blob = cpio.write(entries)
    parsed = parse_newc(blob)
    assert {p.name: (p.data, p.mode) for p in parsed} == {
        path: (data, stat.S_IFREG | perm) for path, (data, perm) in files.items()
    }
    random.Random(seed).shuffle(entries)
    assert cpio.write(entries) == blob


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) is not installed")
def test_gnu_cpio_extracts_files_dirs_and_symlinks(tmp_path: Path) -> None:
    entries = [e for e in SAMPLE if not stat.S_ISCHR(e.mode)]
    out = tmp_path / "root"
    out.mkdir()
    proc = subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
        input=cpio.write(entries, mtime=1_600_000_000),
        cwd=out,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert (out / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((out / "init").stat().st_mode) == 0o755
    assert (out / "etc/motd").read_bytes() == b"hello"
    assert stat.S_IMODE((out / "etc/motd").stat().st_mode) == 0o644
    assert (out / "etc/empty").read_bytes() == b""
    assert (out / "bin/busybox").read_bytes() == bytes(range(256)) * 3
    assert (out / "bin/sh").is_symlink()
    assert os.readlink(out / "bin/sh") == "busybox"
    assert (out / "bin").is_dir()
    assert int((out / "etc/motd").stat().st_mtime) == 1_600_000_000


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) is not installed")
def test_gnu_cpio_lists_every_entry(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["cpio", "-t", "--quiet"], input=cpio.write(SAMPLE), capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == sorted(e.path for e in SAMPLE)


def test_built_tiny_guest_initramfs_is_well_formed() -> None:
    from vmkit.guest.build import find_built

    guest = find_built()
    if guest is None or not guest.initrd.is_file():
        pytest.skip("no tiny guest built in the cache (vmkit.guest.build.find_built() is None)")
    parsed = parse_newc(gzip.decompress(guest.initrd.read_bytes()))
    names = [p.name for p in parsed]
    assert names == sorted(names)
    assert "init" in names
