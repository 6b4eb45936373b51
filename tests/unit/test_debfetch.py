"""The apt-less Debian package path (guest/debfetch.py), checked against dpkg itself."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from vmkit.errors import VmkitError
from vmkit.guest import debfetch

PAIRS = [
    ("1.0", "1.0"), ("1.0", "1.1"), ("1.0-1", "1.0-2"), ("1:0.9", "2.0"), ("1.0~rc1", "1.0"),
    ("1.0~rc1", "1.0~rc2"), ("1.0", "1.0+b1"), ("1:1.35.0-4+deb12u1+b1", "1:1.35.0-4+deb12u1"),
    ("6.1.192-3", "6.1.90-1"), ("6.1.0-57", "6.1.0-9"), ("2.0a", "2.0"), ("1.0.0", "1.0"),
    ("0:1.0", "1.0"), ("1.0-1~bpo12+1", "1.0-1"), ("10", "9"), ("1.2.3a", "1.2.3~"),
]  # fmt: skip


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg is the reference")
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_version_order_matches_dpkg(a: str, b: str) -> None:
    got = debfetch.compare_versions(a, b)
    for op, want in (("lt", got < 0), ("eq", got == 0), ("gt", got > 0)):
        real = subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0
        assert real == want, f"{a} {op} {b}: dpkg says {real}"


def test_inrelease_and_packages_are_read_like_apt() -> None:
    inrelease = (
        "Origin: Debian\nSHA256:\n"
        " 1111 100 main/binary-arm64/Packages\n 2222 42 main/binary-arm64/Packages.xz\n"
        "-----BEGIN PGP SIGNATURE-----\n"
    )
    assert debfetch.release_sha256(inrelease, "main/binary-arm64/Packages.xz") == ("2222", 42)
    with pytest.raises(VmkitError, match="no SHA256 for main/binary-amd64"):
        debfetch.release_sha256(inrelease, "main/binary-amd64/Packages.xz")
    packages = (
        "Package: busybox-static\nVersion: 1:1.35.0-4\nDepends: libc6\nFilename: pool/b.deb\n"
        "Size: 10\nSHA256: abc\nDescription: x\n continued line\n\n"
        "Package: broken\nVersion: 1\n\n"
    )
    entries = list(debfetch.parse_packages(packages, "https://m/debian"))
    assert entries == [
        debfetch.PackageEntry(
            "busybox-static", "1:1.35.0-4", "libc6", "https://m/debian/pool/b.deb", "abc", 10
        )
    ]


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        head = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += head + data + (b"\n" if len(data) % 2 else b"")
    return out


def _tar(entries: list[tarfile.TarInfo], payloads: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for info in entries:
            data = payloads.get(info.name)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o755
    return info


def test_extract_keeps_files_and_dirs_inside_the_tree_and_skips_links(tmp_path: Path) -> None:
    link = tarfile.TarInfo("./bin/sh")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    d = tarfile.TarInfo("./bin")
    d.type = tarfile.DIRTYPE
    data = _tar([d, _file("./bin/busybox", b"BB"), link], {"./bin/busybox": b"BB"})
    deb = tmp_path / "ok.deb"
    deb.write_bytes(
        _ar([("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", data)])
    )
    debfetch.extract(deb, tmp_path / "tree")
    assert (tmp_path / "tree" / "bin" / "busybox").read_bytes() == b"BB"
    assert not (tmp_path / "tree" / "bin" / "sh").exists()

    evil = _tar([_file("../escape", b"x")], {"../escape": b"x"})
    bad = tmp_path / "bad.deb"
    bad.write_bytes(_ar([("debian-binary", b"2.0\n"), ("data.tar.xz", evil)]))
    with pytest.raises(VmkitError, match=r"refusing the archive path '\.\./escape'"):
        debfetch.extract(bad, tmp_path / "tree2")
    assert not (tmp_path / "escape").exists()
    zst = tmp_path / "zst.deb"
    zst.write_bytes(_ar([("debian-binary", b"2.0\n"), ("data.tar.zst", b"\x28\xb5\x2f\xfd")]))
    with pytest.raises(VmkitError, match=r"data\.tar\.zst is not a compression vmkit can read"):
        debfetch.extract(zst, tmp_path / "tree3")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is the reference")
def test_a_deb_dpkg_deb_built_unpacks_as_dpkg_deb_unpacks_it(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: vmkit-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: test\n"
    )
    (pkg / "lib" / "modules" / "6.1").mkdir(parents=True)
    (pkg / "lib" / "modules" / "6.1" / "a.ko").write_bytes(bytes(range(256)) * 100)
    (pkg / "bin").mkdir()
    (pkg / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    subprocess.run(["dpkg-deb", "-Zxz", "--build", str(pkg), str(tmp_path / "t.deb")],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(["dpkg-deb", "-x", str(tmp_path / "t.deb"), str(tmp_path / "ref")], check=True)
    debfetch.extract(tmp_path / "t.deb", tmp_path / "ours")
    for rel in ("lib/modules/6.1/a.ko", "bin/tool"):
        assert (tmp_path / "ours" / rel).read_bytes() == (tmp_path / "ref" / rel).read_bytes()
