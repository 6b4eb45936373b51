"""The option-string rules of vmkit.optstr against the real binaries (issue 15, item 1).

One real QEMU guest whose VM folder, sockets, kernel, initrd, disk, serial log and share all
live under paths with `,` `=` and `"`: it must boot, QEMU must open exactly those files, and
the read-only share must serve its own folder, never the /tmp/secret-like folder next to it.
The real Cloud Hypervisor binary must bind its API socket at a path with a comma.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from guestio import guest_run

from vmkit.drivers.qmp import QMP
from vmkit.shares.virtiofsd import find

WEIRD = 'a,b=c"d'
CH = Path(
    os.environ.get("VMKIT_REAL_CH")
    or Path(__file__).resolve().parents[3] / "shared/tools/cloud-hypervisor/cloud-hypervisor"
)


def test_the_share_attack_is_refused_by_the_cli(cli, tmp_path: Path) -> None:
    (tmp_path / "pub").mkdir()
    (tmp_path / "secret").mkdir()
    share = f"{tmp_path}/pub,source={tmp_path}/secret:pub:ro"
    proc = cli("create", "x", "--share", share)
    assert proc.returncode == 2, proc.stderr
    assert "shares[0].host" in proc.stderr and "comma" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert cli.json("ls") == []


def test_a_guest_under_weird_paths_boots_and_gets_exactly_its_files(cli, guest, tmp_path):
    try:
        find()
    except Exception as exc:
        pytest.skip(str(exc))
    base = tmp_path / WEIRD
    base.mkdir()
    kernel, initrd = base / "vm,linux", base / "init=rd"
    shutil.copy(guest.vmlinux, kernel)
    shutil.copy(guest.initrd, initrd)
    disk = base / "d,isk=1.img"
    with disk.open("wb") as f:
        f.truncate(4 << 20)
    pub, secret = tmp_path / 'p=u"b', tmp_path / "secret"  # a comma is refused (above)
    pub.mkdir()
    secret.mkdir()
    (pub / "hello").write_text("public\n")
    (secret / "key").write_text("secret\n")
    serial = base / "ser,ial.log"
    run_dir = Path(tempfile.mkdtemp(prefix="v,k=", dir="/tmp"))
    env = {**cli.env, "VMKIT_HOME": str(base / "home"), "VMKIT_RUNTIME_DIR": str(run_dir)}
    weird = type(cli)(env, base / "home")
    spec = {
        "name": "odd",
        "accelerator": "tcg",
        "boot": {"kernel": str(kernel), "initrd": str(initrd), "cmdline": "vmkit.share=pub"},
        "disks": [{"path": str(disk)}],
        "serial_log": str(serial),
        "shares": [{"host": str(pub), "tag": "pub", "readonly": True}],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    try:
        weird.ok("create", "-f", str(tmp_path / "spec.yaml"))
        weird.ok("start", "odd", "--wait")
        # no `quiet`: kernel messages still arrive, yet the marker has a line of its own
        assert re.search(r"\nVMKIT_READY -\r?\n", serial.read_text(errors="replace"))
        sockets = weird.json("inspect", "odd")["runtime"]["sockets"]
        assert all(s.startswith(str(run_dir)) for s in sockets.values())
        with QMP(sockets["qmp"]) as q:
            files = [b["inserted"]["file"] for b in q.execute("query-block") if b.get("inserted")]
        assert str(disk) in files, files
        guest_run(weird, "odd", "ls /mnt/pub; cat /sys/block/vda/size", r"hello\s+8192")
        guest_run(weird, "odd", "ls /mnt/pub/key || echo no-key", r"no-key")
        guest_run(weird, "odd", "echo x > /mnt/pub/new", r"Read-only file system")
        assert sorted(p.name for p in pub.iterdir()) == ["hello"]
        assert sorted(p.name for p in secret.iterdir()) == ["key"]
    finally:
        subprocess.run(
            [*weird_cmd(), "rm", "--force", "odd"], env=env, capture_output=True, timeout=60
        )
        shutil.rmtree(run_dir, ignore_errors=True)


def weird_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "vmkit.cli"]


@pytest.mark.skipif(not CH.exists(), reason=f"no real Cloud Hypervisor at {CH}")
def test_cloud_hypervisor_binds_its_api_socket_at_a_path_with_a_comma(tmp_path: Path) -> None:
    from vmkit.drivers.base import LaunchContext
    from vmkit.drivers.cloud_hypervisor import CloudHypervisorDriver

    run_dir = Path(tempfile.mkdtemp(prefix="c,h=", dir="/tmp"))
    vm_dir = tmp_path / "v,m=x"
    vm_dir.mkdir()
    ctx = LaunchContext(
        vm_dir=vm_dir,
        serial_log=vm_dir / "serial.log",
        events_log=vm_dir / "ev,ents.log",
        sockets={"api": run_dir / "vm.api"},
        accelerator="kvm",
    )
    argv = CloudHypervisorDriver()._argv(ctx)
    argv[0] = str(CH)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not (run_dir / "vm.api").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no API socket at the exact path"
            time.sleep(0.05)
        assert (vm_dir / "ev,ents.log").exists()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
