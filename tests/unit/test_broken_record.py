"""A damaged machine.json never crashes ls/inspect/rm/gc: the VM shows as `broken` with the
reason, and `rm --force` removes it (issue 15, item 4). Through the real CLI, as a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmkit.store import MACHINE_FILE, Store

DAMAGE = {
    "empty": b"",
    "garbage": b"\x00\xffnot json at all",
    "truncated": b'{"driver": "qemu", "spec": {"name": "vm1", "cpu',
    "a list": b"[1, 2, 3]",
    "driver not a string": json.dumps({"driver": 7, "spec": {}}).encode(),
    "spec not a mapping": json.dumps({"driver": "qemu", "spec": "x"}).encode(),
    "spec invalid": json.dumps({"driver": "qemu", "spec": {"name": "v", "cpus": "x"}}).encode(),
    "no spec": json.dumps({"driver": "qemu"}).encode(),
    "non-utf8": b'{"driver": "\xff\xfe"}',
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_record_is_broken_not_a_traceback(cli, damage: str) -> None:
    store = Store(cli.home)
    store.ensure()
    vm_dir = store.create("vm1", {})
    (vm_dir / MACHINE_FILE).write_bytes(DAMAGE[damage])

    full = damage == "truncated"  # every verb on one damage; ls/inspect --json/rm on all
    reads = (("ls",), ("inspect", "vm1")) if full else ()
    for args in (*reads, ("ls", "--json"), ("inspect", "vm1", "--json")):
        proc = cli(*args)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "broken" in proc.stdout, (args, proc.stdout)
        if args == ("ls", "--json"):
            listed = json.loads(proc.stdout)
            assert listed[0]["state"] == "broken" and "machine.json" in listed[0]["reason"]
        if args == ("inspect", "vm1", "--json"):
            assert "rm --force" in json.loads(proc.stdout)["status"]["hint"]

    if full:
        proc = cli("gc")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        proc = cli("start", "vm1")
        assert proc.returncode == 1 and "broken" in proc.stderr and "Traceback" not in proc.stderr
        proc = cli("rm", "vm1")
        assert proc.returncode != 0 and "--force" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    cli.ok("rm", "--force", "vm1")
    assert cli.json("ls") == []
    assert not Path(vm_dir).exists()
