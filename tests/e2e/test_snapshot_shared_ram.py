"""Copies restored from one snapshot share its RAM copy-on-write, on real QEMU guests (TCG).

The snapshot's RAM lives in one file (drivers/qemu/shared_ram.py) that every copy maps
privately: what a copy writes stays its own, the file never changes, and the pages no copy
wrote are the same page-cache pages in all of them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import psutil
import pytest
from guestio import guest_run

from vmkit.drivers.qemu.control import QemuControl
from vmkit.drivers.qemu.driver import QemuDriver

TCG = ("--accel", "tcg")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _ram_mapping(pid: int, ram: Path) -> dict[str, int]:
    """The kB counters of the copy's mapping of the snapshot's RAM file (smaps)."""
    out: dict[str, int] = {}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith(str(ram))
            continue
        if inside and line.endswith(" kB"):
            key, value = line.split(":", 1)
            out[key] = out.get(key, 0) + int(value.split()[0])
    return out


@pytest.fixture
def snap(cli, guest):
    cli.ok("run", "src", "--net", "user", *TCG)
    guest_run(cli, "src", "echo before > /tmp/who", "")
    made = cli.json("snapshot", "create", "src", "base")
    assert made["shared_ram"] == "yes", made  # else: why the RAM stayed in the stream
    cli.ok("rm", "--force", "src")
    return made


@pytest.mark.capability("qemu", "snapshot")
def test_copies_share_the_snapshot_ram_and_keep_their_writes_private(cli, snap):
    assert snap["shared_ram"] == "yes"
    ram = Path(snap["path"]) / "ram.qemu"
    assert ram.stat().st_size == 256 << 20 and ram.stat().st_mode & 0o777 == 0o600
    assert not (Path(snap["path"]) / "state.qemu").exists()  # its RAM moved to ram.qemu
    before = _digest(ram)

    copies = {name: cli.json("restore", "base", "--name", name) for name in ("a", "b")}
    assert all(c["state"] == "ready" and c["ip"] for c in copies.values())
    for name in copies:  # the same guest memory, different data, in each copy
        guest_run(cli, name, f"cat /tmp/who; echo {name}-wrote > /tmp/who", "before")
        data = "x" * 64
        guest_run(cli, name, f"for i in $(seq 200); do echo {name}{data}; done > /tmp/big", "")
    for name, other in (("a", "b"), ("b", "a")):
        seen = guest_run(cli, name, "cat /tmp/who", f"{name}-wrote").group(1)
        assert f"{other}-wrote" not in seen and "before" not in seen
        guest_run(cli, name, f"grep -c ^{name} /tmp/big; grep -vc ^{name} /tmp/big", r"200\s+0")

    # each copy maps the snapshot's RAM file privately and shares its clean pages
    for c in copies.values():
        argv = psutil.Process(c["pid"]).cmdline()
        assert any(f"mem-path={ram},share=off" in a for a in argv), argv
        counts = _ram_mapping(c["pid"], ram)
        assert counts.get("Shared_Clean", 0) > 1024, counts  # > 1 MiB of it, in both copies
    assert _digest(ram) == before  # no copy wrote into the snapshot

    # a copy's control port answers (blocking pipe chardev, no polling)
    rt = json.loads((cli.home / "vms" / "a" / "runtime.json").read_text())
    ctl = QemuControl(QemuDriver(), rt["sockets"], cli.home / "vms" / "a")
    assert ctl.ping().startswith("ok ")

    # the copies' writes never reach the snapshot: a new copy sees the snapshot's data
    cli.ok("rm", "--force", "a", "b")
    cli.json("restore", "base", "--name", "c")
    assert "wrote" not in guest_run(cli, "c", "cat /tmp/who; ls /tmp", "before").group(1)
    assert _digest(ram) == before

    # and a copy can itself be snapshotted and restored (its RAM block keeps its name)
    again = cli.json("snapshot", "create", "c", "second")
    assert again["shared_ram"] == "yes"
    cli.ok("rm", "--force", "c")
    assert cli.json("restore", "second", "--name", "d")["state"] == "ready"
    assert "wrote" not in guest_run(cli, "d", "cat /tmp/who", "before").group(1)


@pytest.mark.capability("qemu", "snapshot")
def test_a_missing_or_damaged_ram_file_is_refused_clearly_and_leaves_nothing(cli, snap):
    ram = Path(snap["path"]) / "ram.qemu"
    saved = ram.with_name("saved")
    ram.rename(saved)
    proc = cli("restore", "base", "--name", "bad")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "damaged" in proc.stderr and "RAM file" in proc.stderr and "missing" in proc.stderr

    saved.rename(ram)
    with ram.open("r+b") as f:
        f.truncate(100 << 20)
    proc = cli("restore", "base", "--name", "bad")
    assert proc.returncode == 1 and "truncated" in proc.stderr and "RAM file" in proc.stderr
    assert ram.stat().st_size == 100 << 20  # vmkit never grows (writes) the snapshot's file
    assert cli.json("ls") == []
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if "guest=vmkit-bad" in " ".join(p.info["cmdline"] or [])
    ]
