"""Storage on real files with the real tools, no VM: checksum files as publishers write
them, cloud-config against cloud-init's own JSON schema, the seed ISO as blkid and pycdlib
read it, qcow2 headers as qemu-img writes them, sparse copies across filesystems."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmkit.errors import VmkitError
from vmkit.storage import disk, seed
from vmkit.storage.clone import _copy_skipping_zeros, clone_file
from vmkit.storage.images import expected_digest

MIB = 1 << 20
H256 = "ab" * 32
H512 = "cd" * 64


# ---- checksum files, in the shapes the catalog's publishers use -------------------------
def test_gnu_style_lines_with_and_without_binary_marker() -> None:
    sums = f"{'0' * 64}  other.img\n{H256} *noble-server-cloudimg-amd64.img\n"
    assert expected_digest(sums, "noble-server-cloudimg-amd64.img") == ("sha256", H256)
    deb = "debian-12-generic-amd64.qcow2"
    assert expected_digest(f"{H512}  ./{deb}\n", deb) == ("sha512", H512)


def test_bsd_style_inside_a_pgp_signed_fedora_checksum_file() -> None:
    sums = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"
        "# Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2: 491257856 bytes\n"
        f"SHA256 (Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2) = {H256}\n"
        f"SHA256 (Fedora-Cloud-Base-Generic-41-1.4.x86_64.raw.xz) = {'e' * 64}\n"
        "-----BEGIN PGP SIGNATURE-----\n\nwsFz...\n-----END PGP SIGNATURE-----\n"
    )
    got = expected_digest(sums, "Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2")
    assert got == ("sha256", H256)


def test_a_file_holding_only_the_hash_and_a_missing_name() -> None:
    assert expected_digest(f"{H512}\n", "whatever.qcow2") == ("sha512", H512)
    with pytest.raises(VmkitError, match=r"no checksum for 'absent\.img'"):
        expected_digest(f"{H256}  a.img\n{H256}  b.img\n", "absent.img")


# ---- cloud-config ---------------------------------------------------------------------
def _doc(ci: dict[str, Any], keys: list[str] | None = None) -> dict[str, Any]:
    return seed.user_data(ci, "VMKIT_READY", keys or ["ssh-ed25519 AAAAC3Nza vmkit"])


def test_user_data_merge_keeps_the_readiness_line_last() -> None:
    doc = _doc(
        {
            "runcmd": ["echo first"],
            "packages": ["nginx"],
            "user_data": {
                "runcmd": [["touch", "/x"]],
                "packages": ["curl"],
                "write_files": [{"path": "/etc/motd", "content": "hi"}],
                "users": [{"name": "extra"}],
                "hostname": "over",
            },
            "hostname": "web",
        }
    )
    assert doc["runcmd"][:2] == ["echo first", ["touch", "/x"]]
    assert doc["runcmd"][-1][:2] == ["sh", "-c"] and "VMKIT_READY" in doc["runcmd"][-1][2]
    assert doc["packages"] == ["nginx", "curl"]  # lists are appended, as cloud-init merges
    assert [u if isinstance(u, str) else u["name"] for u in doc["users"]] == [
        "default",
        "vmkit",
        "extra",
    ]
    assert doc["hostname"] == "over"  # a plain value: the user's wins
    user = doc["users"][1]
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and "groups" not in user
    assert "shell" not in user  # the image's default (Alpine has no bash)
    assert _doc({"ready_line": False, "sudo": False, "shell": "/bin/bash"})["users"][1] == {
        "name": "vmkit",
        "lock_passwd": True,
        "ssh_authorized_keys": ["ssh-ed25519 AAAAC3Nza vmkit"],
        "shell": "/bin/bash",
    }
    assert "runcmd" not in _doc({"ready_line": False})


def test_readiness_command_is_valid_sh_and_never_fails(tmp_path: Path) -> None:
    cmd = seed.READY_CMD.format(marker="MARK")
    sh = shutil.which("dash") or shutil.which("sh")
    assert sh is not None
    proc = subprocess.run([sh, "-n", "-c", cmd], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # With no serial device to write to (as in this test process's namespace or a guest
    # without ttyAMA0), the command still exits 0: cloud-init must not report a failure.
    env = {"PATH": os.environ["PATH"]}
    fake = cmd.replace("/dev/ttyS0 /dev/hvc0 /dev/ttyAMA0", str(tmp_path / "none"))
    assert subprocess.run([sh, "-c", fake], env=env).returncode == 0


@pytest.fixture(scope="session")
def cloud_config_schema() -> dict[str, Any]:
    """cloud-init's own schema for #cloud-config, from Debian's cloud-init package."""
    cache = Path(os.environ.get("VMKIT_CACHE") or Path.home() / ".cache" / "vmkit")
    target = cache / "test-cloud-init" / "schema-cloud-config-v1.json"
    if not target.exists():
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            pytest.skip("apt-get/dpkg-deb missing: cannot fetch cloud-init's schema (Debian)")
        work = target.parent / ".fetch"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        got = subprocess.run(
            ["apt-get", "download", "-q", "cloud-init"], cwd=work, capture_output=True, text=True
        )
        if got.returncode != 0:
            pytest.skip(f"cannot download Debian's cloud-init package: {got.stderr.strip()}")
        (deb,) = work.glob("cloud-init_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
        (found,) = (work / "x").rglob("schema-cloud-config-v1.json")
        os.replace(found, target)
        shutil.rmtree(work)
    schema: dict[str, Any] = json.loads(target.read_text())
    return schema


def test_generated_cloud_config_passes_cloud_inits_own_schema(
    cloud_config_schema: dict[str, Any],
) -> None:
    import jsonschema

    validator = jsonschema.Draft4Validator(cloud_config_schema)
    for ci in (
        {},
        {"hostname": "web-1", "packages": ["nginx"], "runcmd": ["echo a", ["ls", "/"]]},
        {"sudo": False, "shell": "/bin/bash", "ready_line": False},
        {"user_data": {"write_files": [{"path": "/etc/motd", "content": "hi"}], "timezone": "UTC"}},
    ):
        text = seed.render_user_data(_doc(ci))
        assert text.startswith("#cloud-config\n")
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(text))]
        assert errors == [], (ci, errors)
    # the schema does catch mistakes, so the test above can fail
    bad = _doc({"user_data": {"users": [{"name": "x", "lock_passwd": "yes"}]}})
    assert list(validator.iter_errors(bad))


# ---- the seed ISO -----------------------------------------------------------------------
def test_seed_iso_is_labelled_cidata_for_blkid_and_holds_the_files(tmp_path: Path) -> None:
    import pycdlib

    iso = tmp_path / "seed.iso"
    doc = _doc({"hostname": "h"})
    seed.build_iso(iso, doc, {"instance-id": "i-1"}, {"version": 2, "ethernets": {}})
    assert iso.stat().st_mode & 0o777 == 0o600
    blkid = shutil.which("blkid")
    if blkid is not None:  # how cloud-init's NoCloud finds its seed: blkid -tLABEL=cidata
        out = subprocess.run([blkid, "-o", "export", str(iso)], capture_output=True, text=True)
        fields = dict(line.split("=", 1) for line in out.stdout.split())
        assert fields.get("LABEL") == "cidata" and fields.get("TYPE") == "iso9660", out.stdout
    reader = pycdlib.PyCdlib()
    reader.open(str(iso))
    try:
        got = {}
        for name in ("user-data", "meta-data", "network-config"):
            buf = io.BytesIO()
            reader.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            got[name] = buf.getvalue().decode()
    finally:
        reader.close()
    assert yaml.safe_load(got["user-data"]) == doc
    assert got["user-data"].startswith("#cloud-config\n")
    assert yaml.safe_load(got["meta-data"]) == {"instance-id": "i-1"}
    assert yaml.safe_load(got["network-config"])["version"] == 2


def test_make_seed_authorizes_vmkits_key_and_a_fresh_instance_id(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen missing (scripts/setup.sh installs openssh-client)")
    home = tmp_path / "home"
    spec = {"name": "vm", "cloud_init": {"ssh_authorized_keys": ["ssh-ed25519 AAAAuser me"]}}
    ids = []
    for i in range(2):
        vm_dir = tmp_path / f"vm{i}"
        vm_dir.mkdir()
        iso = seed.make_seed(spec, vm_dir, home)
        ids.append(_iso_yaml(iso, "meta-data")["instance-id"])
        keys = _iso_yaml(iso, "user-data")["users"][1]["ssh_authorized_keys"]
        own = (home / "ssh" / "id_ed25519.pub").read_text().strip()
        assert keys == [own, "ssh-ed25519 AAAAuser me"]
    assert (home / "ssh" / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert (home / "ssh").stat().st_mode & 0o777 == 0o700
    assert ids[0] != ids[1] and all(i.startswith("vmkit-vm-") for i in ids)


def _iso_yaml(iso: Path, name: str) -> Any:
    import pycdlib

    reader = pycdlib.PyCdlib()
    reader.open(str(iso))
    try:
        buf = io.BytesIO()
        reader.get_file_from_iso_fp(buf, rr_path=f"/{name}")
    finally:
        reader.close()
    return yaml.safe_load(buf.getvalue())


# ---- qcow2 headers and sparse copies ---------------------------------------------------
def test_backing_file_read_from_headers_qemu_img_wrote(tmp_path: Path) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img missing (scripts/setup.sh installs qemu-utils)")
    base = tmp_path / "base.raw"
    base.write_bytes(b"\0" * MIB)
    disk.overlay(base, tmp_path / "abs.qcow2")
    assert disk.backing_file(tmp_path / "abs.qcow2") == base
    sub = tmp_path / "sub"
    sub.mkdir()
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "../base.raw",
         str(sub / "rel.qcow2")],
        check=True,
    )  # fmt: skip
    assert disk.backing_file(sub / "rel.qcow2") == sub / "../base.raw"
    plain = disk.create(tmp_path / "plain.qcow2", MIB, "qcow2")
    assert plain.backing_file is None and disk.backing_file(tmp_path / "plain.qcow2") is None
    assert disk.backing_file(base) is None
    users = disk.overlays_of([base], [tmp_path])
    assert users == sorted([tmp_path / "abs.qcow2", sub / "rel.qcow2"])


def _holey(path: Path, size: int = 32 * MIB) -> bytes:
    with path.open("wb") as f:
        f.truncate(size)
        f.seek(4 * MIB)
        f.write(b"d" * MIB)
        f.seek(size - MIB)
        f.write(b"t" * MIB)
    return path.read_bytes()


def test_sparse_copy_across_filesystems_keeps_holes(tmp_path: Path) -> None:
    """copy_file_range refuses a tmpfs -> ext4 pair (EXDEV); the copy falls back to
    pread/pwrite and still copies only the data."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's temp dir")
    src = shm / f"vmkit-test-{os.getpid()}.img"
    try:
        data = _holey(src)
        dst = tmp_path / "copy.img"
        result = clone_file(src, dst)
        assert result.method == "sparse-copy" and result.bytes_copied == 2 * MIB
        assert dst.read_bytes() == data
        assert dst.stat().st_blocks * 512 <= 3 * MIB
    finally:
        src.unlink(missing_ok=True)


def test_copy_without_seek_data_skips_zero_blocks(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    data = _holey(src)
    with src.open("rb") as s, dst.open("wb") as d:
        copied = _copy_skipping_zeros(s.fileno(), d.fileno(), len(data))
    assert copied == 2 * MIB and dst.read_bytes() == data
    assert dst.stat().st_blocks * 512 <= 3 * MIB


def test_convert_reports_progress_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img missing (scripts/setup.sh installs qemu-utils)")
    src = tmp_path / "src.raw"
    _holey(src)
    seen: list[float] = []
    info = disk.convert(src, tmp_path / "out.qcow2", "qcow2", seen.append)
    assert info.format == "qcow2" and info.virtual_size == 32 * MIB
    assert seen and seen == sorted(seen) and seen[-1] == 100.0
    broken = tmp_path / "broken.qcow2"
    broken.write_bytes(disk.QCOW2_MAGIC + b"\0\0\0\3" + b"\xff" * 600)  # a nonsense header
    with pytest.raises(VmkitError):
        disk.convert(broken, tmp_path / "never.raw", "raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "broken.qcow2",
        "out.qcow2",
        "src.raw",
    ]


def test_vm_owned_clone_of_qcow2_for_a_raw_only_driver_is_converted(tmp_path: Path) -> None:
    """vfkit reads only raw: a `clone:` of a qcow2 image becomes a raw disk, not a qcow2 copy
    the driver would refuse at start."""
    from vmkit.storage.prepare import materialize

    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img missing (scripts/setup.sh installs qemu-utils)")
    raw = tmp_path / "src.raw"
    data = _holey(raw)
    base = tmp_path / "base.qcow2"
    disk.convert(raw, base, "qcow2")
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    spec = {"disks": [{"clone": str(base)}, {"size": 4 * MIB, "format": "qcow2"}]}
    done = materialize(spec, vm_dir, overlay_ok=False)
    assert [d["method"] for d in done if d["made"] == "clone"] == ["qcow2-to-raw"]
    assert spec["disks"][0] == {
        "clone": str(base),
        "path": str(vm_dir / "disk0.raw"),
        "format": "raw",
    }
    assert (vm_dir / "disk0.raw").read_bytes() == data
    assert disk.info(vm_dir / "disk1.qcow2").virtual_size == 4 * MIB
    # a driver that reads qcow2 gets the O(1) overlay (or a reflink) instead
    vm2 = tmp_path / "vm2"
    vm2.mkdir()
    spec2 = {"disks": [{"clone": str(raw)}]}
    (made,) = materialize(spec2, vm2, overlay_ok=True)
    assert made["method"] in ("qcow2-overlay", "reflink") and made["base"] == str(raw)
    assert Path(spec2["disks"][0]["path"]).suffix == (
        ".qcow2" if made["method"] == "qcow2-overlay" else ".raw"
    )


def test_cache_file_names_never_escape_the_cache() -> None:
    from vmkit.storage.images import cache_filename

    assert cache_filename("https://x/a/debian-12-generic-amd64.qcow2") == (
        "debian-12-generic-amd64.qcow2"
    )
    for url in ("http://x/..", "http://x/", "http://x/.hidden", "http://x/a%2F..%2Fb"):
        assert cache_filename(url) == "image", url


def test_cloud_init_spec_fields_are_checked() -> None:
    from vmkit.errors import SpecError
    from vmkit.spec import spec_from_dict

    base = {"name": "c", "boot": {"kernel": "/k"}}
    ok = spec_from_dict(
        {
            **base,
            "cloud_init": {"shell": "/bin/bash", "ssh_authorized_keys": [" ssh-ed25519 AAAA me "]},
        },
        check_files=False,
    )
    assert ok.cloud_init is not None and ok.cloud_init.ssh_authorized_keys == [
        "ssh-ed25519 AAAA me"
    ]
    with pytest.raises(SpecError) as err:
        spec_from_dict(
            {**base, "cloud_init": {"shell": "bash; rm", "ssh_authorized_keys": ["AAAA"]}},
            check_files=False,
        )
    text = str(err.value)
    assert "cloud_init.shell" in text and "cloud_init.ssh_authorized_keys" in text


def test_copied_qcow2_with_a_relative_backing_file_still_finds_it(tmp_path: Path) -> None:
    """A clone of a qcow2 overlay whose header names its backing file relatively: the copy
    lives in another folder, so vmkit pins the name to the absolute path."""
    from vmkit.storage.prepare import materialize

    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img missing (scripts/setup.sh installs qemu-utils)")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    data = _holey(imgs / "base.raw")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "base.raw",
         str(imgs / "child.qcow2")],
        check=True,
    )  # fmt: skip
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    spec = {"disks": [{"clone": str(imgs / "child.qcow2")}]}
    (made,) = materialize(spec, vm_dir, overlay_ok=False)  # a raw-only driver: flattened
    assert made["method"] == "qcow2-to-raw"
    assert (vm_dir / "disk0.raw").read_bytes() == data
    vm2 = tmp_path / "vm2"
    vm2.mkdir()
    copy = vm2 / "disk0.qcow2"
    from vmkit.storage.clone import clone_file

    # a reflink or sparse copy (a snapshot's disk, a clone where no overlay is allowed)
    assert clone_file(imgs / "child.qcow2", copy).method in ("reflink", "sparse-copy")
    assert disk.backing_file(copy) == imgs / "base.raw"  # not vm2/base.raw
    out = vm2 / "check.raw"
    disk.convert(copy, out, "raw")  # qemu-img reads the whole chain through the copy
    assert out.read_bytes() == data


def test_a_driver_without_owned_disks_or_seeds_refuses_them_by_name(tmp_path: Path) -> None:
    """krunkit declares no `cloud_init` (its disks cannot be read-only): `create` says so
    before it makes anything. A driver without `disk_clone` is refused the same way."""
    from vmkit.drivers.vfkit import KrunkitDriver
    from vmkit.errors import NotSupported
    from vmkit.machine import Host
    from vmkit.spec import spec_from_dict
    from vmkit.storage.prepare import check_owned_files

    base = tmp_path / "base.raw"
    _holey(base)
    host = Host(tmp_path / "home")
    efi = {"kind": "efi"}
    spec = spec_from_dict(
        {"name": "v", "driver": "krunkit", "boot": efi, "disks": [{"path": str(base)}],
         "cloud_init": {}}
    )  # fmt: skip
    with pytest.raises(NotSupported, match=r"cloud_init: the krunkit driver does not attach"):
        host.create(spec)
    assert host.store.names() == []

    class NoOwnedDisks(KrunkitDriver):
        features = KrunkitDriver.features.replace(disk_clone=False)

    for extra, words in (
        ({"disks": [{"clone": str(base)}]}, ["disks[0] (clone: ", "krunkit", "path:"]),
        ({"disks": [{"size": "8M"}]}, ["disks[0] (size: 8388608)"]),
    ):
        spec = spec_from_dict({"name": "v", "driver": "krunkit", "boot": efi, **extra})
        with pytest.raises(NotSupported) as err:
            check_owned_files(spec, NoOwnedDisks())
        assert all(w in str(err.value) for w in words), str(err.value)
