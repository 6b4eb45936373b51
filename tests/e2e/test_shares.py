"""virtio-fs shares on real QEMU (TCG) with the real virtiofsd."""

from __future__ import annotations

import time

import psutil
import pytest
from guestio import guest_run

from vmkit.shares.virtiofsd import find

TCG = ("--accel", "tcg")


def _virtiofsds(tmp_path) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(str(tmp_path) in a for a in (p.info["cmdline"] or []))
        and any("virtiofsd" in a for a in (p.info["cmdline"] or []))
    ]


@pytest.mark.capability("qemu", "shares")
def test_read_write_and_read_only_shares(cli, guest, tmp_path):
    try:
        find()
    except Exception as exc:
        pytest.skip(str(exc))
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "hello").write_text("from-the-host\n")
    cli.ok("run", "fs", "--share", f"{rw}:work", "--share", f"{ro}:docs:ro", *TCG)
    assert len(cli.json("inspect", "fs")["runtime"]["helpers"]) == 2

    guest_run(cli, "fs", "cat /mnt/docs/hello", r"from-the-host")
    guest_run(cli, "fs", "echo nope > /mnt/docs/new", r"Read-only file system")
    assert sorted(p.name for p in ro.iterdir()) == ["hello"]
    guest_run(cli, "fs", "echo from-the-guest > /mnt/work/note; sync; echo written", r"written")
    assert (rw / "note").read_text() == "from-the-guest\n"

    proc = cli("snapshot", "create", "fs", "s")
    assert proc.returncode == 1 and "virtio-fs shares" in proc.stderr

    cli.ok("kill", "fs")
    deadline = time.monotonic() + 10
    while _virtiofsds(tmp_path):
        assert time.monotonic() < deadline, "virtiofsd outlived its VM"
        time.sleep(0.1)


def test_bad_shares_are_refused(cli, guest, tmp_path):
    for args, text in (
        (("--share", f"{tmp_path}/missing:t"), "does not exist"),
        (("--share", f"{tmp_path}:bad tag"), "not a usable tag"),
        (("--share", f"{tmp_path}:a", "--share", f"{tmp_path}:a"), "used twice"),
        (("--share", "nocolon"), "HOST_DIR:TAG"),
    ):
        proc = cli("create", "bad", *args, *TCG)
        assert proc.returncode == 2, (args, proc.stderr)
        assert text in proc.stderr, (args, proc.stderr)
    assert cli.json("ls") == []
