"""Disks and CoW clones with the real tools: qemu-img, a loopback btrfs, real QEMU guests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from guestio import guest_run

from vmkit.storage import disk
from vmkit.storage.clone import clone_file

TCG = ("--accel", "tcg")
MIB = 1 << 20


def _write_at(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def _sparse_image(path: Path, size: int = 64 * MIB) -> None:
    with path.open("wb") as f:
        f.truncate(size)
    _write_at(path, 0, b"vmkit-base-image".ljust(MIB, b"b"))
    _write_at(path, 48 * MIB, b"tail".ljust(MIB, b"t"))


MKFS = {"btrfs": ["mkfs.btrfs", "-q"], "xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"]}


@pytest.fixture(params=sorted(MKFS))
def reflink_fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A real btrfs or xfs on a loop device, mounted for the test."""
    fs = request.param
    mkfs = MKFS[fs]
    if os.geteuid() != 0 or shutil.which(mkfs[0]) is None:
        pytest.skip(f"needs root and {mkfs[0]} (scripts/setup.sh installs it)")
    backing = tmp_path / f"{fs}.img"
    with backing.open("wb") as f:
        f.truncate(512 * MIB)  # xfs wants >= 300 MiB
    subprocess.run([*mkfs, str(backing)], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-o", "loop", str(backing), str(mnt)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"this kernel cannot mount a loopback {fs}: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _shared_extents(path: Path) -> int:
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if "shared" in line)


@pytest.mark.capability("qemu", "disk_clone")
def test_reflink_clone_shares_extents_and_diverges_on_write(reflink_fs: Path) -> None:
    base = reflink_fs / "base.img"
    _sparse_image(base)
    os.sync()
    assert _shared_extents(base) == 0
    clone = reflink_fs / "clone.img"
    result = clone_file(base, clone)
    assert result.method == "reflink" and result.bytes_copied == 0
    os.sync()
    assert _shared_extents(clone) > 0  # the clone points at the base's extents
    assert clone.read_bytes()[:16] == b"vmkit-base-image"
    _write_at(clone, 0, b"CHANGED")
    assert base.read_bytes()[:16] == b"vmkit-base-image"
    # and a qcow2 overlay is not used where a reflink works
    assert clone_file(base, reflink_fs / "c2.img", allow_overlay=True).method == "reflink"
    assert clone.stat().st_blocks * 512 <= 3 * MIB  # the holes stayed holes


def test_sparse_copy_keeps_holes(tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    _sparse_image(base)
    copy = tmp_path / "copy.img"
    result = clone_file(base, copy)
    if result.method == "reflink":
        pytest.skip("tmp_path's filesystem reflinks; the sparse path is not taken here")
    assert result.method == "sparse-copy"
    assert result.bytes_copied == 2 * MIB  # the two data extents, not the 64 MiB
    assert copy.read_bytes() == base.read_bytes()
    assert copy.stat().st_blocks * 512 <= 4 * MIB
    with copy.open("rb") as f:
        assert os.lseek(f.fileno(), MIB, os.SEEK_HOLE) == MIB  # the hole is still a hole


def test_qcow2_overlay_clone_reads_the_base_and_never_writes_it(tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    _sparse_image(base)
    overlay = tmp_path / "ov.qcow2"
    result = clone_file(base, overlay, allow_overlay=True)
    if result.method == "reflink":
        pytest.skip("tmp_path's filesystem reflinks; no overlay needed")
    assert result.method == "qcow2-overlay"
    info = disk.info(overlay)
    assert info.format == "qcow2" and info.backing_file == str(base)
    assert info.virtual_size == 64 * MIB and info.allocated < MIB


@pytest.mark.capability("qemu", "disk_clone")
def test_vm_with_cloned_and_new_disks_owns_them(cli, guest, tmp_path: Path) -> None:
    """On this ext4 (no reflink) QEMU gets a qcow2 overlay of the raw base: the guest reads
    the base through it, its writes stay in the overlay, the base is never written."""
    base = tmp_path / "base.img"
    _sparse_image(base)
    before = base.read_bytes()
    made = cli.ok("create", "own", "--clone-disk", str(base), "--new-disk", "8M", *TCG).stdout
    assert "disk0:" in made and "new empty disk" in made
    m = re.search(r"disk1: (\S+) \((reflink|qcow2-overlay|sparse-copy) of ", made)
    assert m, made
    clone, method = Path(m.group(1)), m.group(2)
    made_json = cli.json("inspect", "own")["disks_made"]
    assert [(d["index"], d["made"]) for d in made_json] == [(0, "empty"), (1, "clone")]
    assert made_json[1]["method"] == method and made_json[1]["base"] == str(base)
    info = cli.json("disk", "info", str(clone))
    if method == "qcow2-overlay":
        assert clone.name == "disk1.qcow2"
        assert info["format"] == "qcow2" and info["backing_file"] == str(base)
        assert info["allocated"] < MIB
    else:
        assert clone.name == "disk1.raw" and info["format"] == "raw"
    cli.ok("start", "own", "--wait")
    # disk order: --disk, --disk-ro, --new-disk, --clone-disk
    guest_run(cli, "own", "cat /sys/block/vda/size", r"16384")  # 8 MiB in sectors
    guest_run(cli, "own", "head -c 16 /dev/vdb", r"vmkit-base-image")
    guest_run(cli, "own", "dd if=/dev/vdb bs=1M skip=48 count=1 2>/dev/null | head -c 4", r"tail")
    guest_run(cli, "own", "printf GUEST-WROTE > /dev/vdb; sync; echo ok", r"ok")
    guest_run(cli, "own", "head -c 11 /dev/vdb", r"GUEST-WROTE")
    # a disk in use by a running VM is not resized under it
    proc = cli("disk", "resize", str(clone), "--size", "128M")
    assert proc.returncode == 1 and "running VM 'own'" in proc.stderr, proc.stderr
    if method == "qcow2-overlay":  # the base under a running overlay is in use too
        proc = cli("disk", "resize", str(base), "--size", "128M")
        assert proc.returncode == 1 and "running VM 'own'" in proc.stderr, proc.stderr
    proc = cli("disk", "convert", str(clone), str(tmp_path / "copy.raw"), "--format", "raw")
    assert proc.returncode == 1 and "not be consistent" in proc.stderr, proc.stderr
    assert not (tmp_path / "copy.raw").exists()
    vm_dir = Path(cli.json("inspect", "own")["paths"]["dir"])
    owned = sorted(p.name for p in vm_dir.glob("disk*"))
    assert owned == sorted(["disk0.raw", clone.name])
    cli.ok("stop", "own", "--timeout", "30")
    grown = cli.json("disk", "resize", str(clone), "--size", "128M")  # stopped: allowed
    assert grown["virtual_size"] == 128 * MIB
    cli.ok("rm", "own")
    assert not vm_dir.exists()
    assert base.read_bytes() == before  # the clone's writes never reached the base


def test_disk_commands_with_qemu_img(cli, tmp_path: Path) -> None:
    q = tmp_path / f"{uuid.uuid4().hex[:6]}.qcow2"
    info = cli.json("disk", "create", str(q), "--size", "1G", "--format", "qcow2")
    assert info["format"] == "qcow2" and info["virtual_size"] == 1 << 30
    raw = tmp_path / "out.raw"
    converted = cli.json("disk", "convert", str(q), str(raw), "--format", "raw")
    assert converted["format"] == "raw" and converted["allocated"] < MIB  # still sparse
    grown = cli.json("disk", "resize", str(raw), "--size", "2G")
    assert grown["virtual_size"] == 2 << 30
    proc = cli("disk", "resize", str(raw), "--size", "1G")
    assert proc.returncode == 2 and "only grows" in proc.stderr
    proc = cli("disk", "create", str(q), "--size", "1G")
    assert proc.returncode == 2 and "never overwrites" in proc.stderr
    proc = cli("disk", "info", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = cli("create", "bad", "--new-disk", "1G:vmdk", *TCG)
    assert proc.returncode == 2 and "--new-disk" in proc.stderr
    proc = cli("create", "bad", "--clone-disk", str(tmp_path / "nope.img"), *TCG)
    assert proc.returncode == 2 and "disks[0].clone" in proc.stderr
    assert cli.json("ls") == []


@pytest.mark.capability("qemu", "cloud_init")
def test_cloud_init_seed_iso_is_read_by_a_real_guest(cli, guest, tmp_path: Path) -> None:
    import json as jsonlib

    spec = tmp_path / "ci.json"
    spec.write_text(
        jsonlib.dumps(
            {
                "name": "ci",
                "boot": {
                    "kernel": str(guest.kernel),
                    "initrd": str(guest.initrd),
                    "cmdline": "console=ttyS0 quiet vmkit.dhcp=1",
                },
                "networks": ["nat"],
                "accelerator": "tcg",
                "cloud_init": {
                    "hostname": "web-1",
                    "packages": ["nginx"],
                    "runcmd": ["echo hello"],
                    "user_data": {"timezone": "UTC"},
                },
            }
        )
    )
    out = cli.ok("create", "-f", str(spec)).stdout
    assert "cloud-init seed:" in out
    home = Path(cli.env["VMKIT_HOME"])
    key = home / "ssh" / "id_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600  # vmkit's own key pair, made on first use
    pub = key.with_suffix(".pub").read_text().strip()
    cli.ok("start", "ci", "--wait")
    # the ISO 9660 volume id: primary volume descriptor (sector 16), offset 40
    guest_run(cli, "ci", "dd if=/dev/vda bs=1 skip=32808 count=6 2>/dev/null", r"cidata")
    m = guest_run(
        cli,
        "ci",
        "mkdir -p /seed; mount -t iso9660 -o ro /dev/vda /seed; cat /seed/user-data",
        r"VMKIT_READY",
    )
    text = m.group(1)
    assert text.lstrip().startswith("#cloud-config")
    assert "hostname: web-1" in text and "- nginx" in text and "timezone: UTC" in text
    assert pub.split()[1] in text  # the key, as authorized
    assert "NOPASSWD:ALL" in text
    guest_run(cli, "ci", "cat /seed/meta-data", r"local-hostname: web-1")
    # The readiness command vmkit appends to runcmd, run on this busybox guest (no
    # `hostname -I`, like Alpine): it finds the DHCP address and says it on the console.
    from vmkit.storage.seed import READY_CMD

    cmd = READY_CMD.format(marker="SEED_SAYS")  # cloud-init runs it as `sh -c CMD`
    guest_run(cli, "ci", f"( {cmd} )", r"SEED_SAYS 10\.0\.2\.15")
    seed = Path(cli.json("inspect", "ci")["paths"]["dir"]) / "seed.iso"
    assert seed.stat().st_mode & 0o777 == 0o600


def test_bad_cloud_init_fields(cli, guest, tmp_path: Path) -> None:
    import json as jsonlib

    spec = tmp_path / "bad.json"
    spec.write_text(
        jsonlib.dumps(
            {
                "name": "bad",
                "boot": {"kernel": str(guest.kernel)},
                "cloud_init": {"hostname": "Not_Valid", "user": "9root"},
            }
        )
    )
    proc = cli("create", "-f", str(spec))
    assert proc.returncode == 2
    assert "cloud_init.hostname" in proc.stderr and "cloud_init.user" in proc.stderr
    assert cli.json("ls") == []
