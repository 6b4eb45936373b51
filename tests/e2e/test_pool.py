"""Warm pools on real QEMU guests: copies restored from one snapshot, paused, handed out
unique under concurrent `vmkit run --pool`, each private, and refilled with no daemon."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest


@pytest.fixture
def snap(cli, guest):
    cli.ok("run", "src", "--kernel", str(guest.kernel), "--initrd", str(guest.initrd),
           "--accel", "tcg", "--net", "nat")  # fmt: skip
    cli.ok("snapshot", "create", "src", "base")
    cli.ok("rm", "--force", "src")
    return "base"


def test_a_pool_hands_out_unique_ready_copies_and_refills(cli, snap):
    made = cli.json("pool", "create", "warm", "--from", snap, "--size", "2")
    assert sorted(made["members"]) == ["warm-1", "warm-2"]
    vms = {vm["name"]: vm for vm in cli.json("ls")}
    assert vms["warm-1"]["state"] == vms["warm-2"]["state"] == "paused"
    # two hand-outs at once: never the same copy
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vmkit.cli", "run", "--pool", "warm", "--json"],
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    import json

    got = [json.loads(out) for out, _err in outs]
    assert sorted(g["name"] for g in got) == ["warm-1", "warm-2"]
    assert all(g["state"] == "ready" for g in got)
    macs = {cli.json("inspect", g["name"])["spec"]["networks"][0]["mac"] for g in got}
    assert len(macs) == 2  # each copy has its own identity
    # the pool refills itself in the background (a short-lived filler, no daemon)
    deadline = time.monotonic() + 240
    while True:
        (pool,) = cli.json("pool", "ls")
        if len(pool["members"]) == 2 and not pool["filling"]:
            break
        assert time.monotonic() < deadline, pool
        time.sleep(1)
    assert sorted(pool["members"]) == ["warm-3", "warm-4"]
    assert sorted(pool["handed_out"]) == ["warm-1", "warm-2"]
    # pool rm removes the copies it holds; handed-out ones stay
    cli.ok("pool", "rm", "warm")
    names = {vm["name"] for vm in cli.json("ls")}
    assert names == {"warm-1", "warm-2"}
    assert cli.json("pool", "ls") == []


def test_pool_bad_input(cli, snap):
    assert cli("pool", "create", "p", "--from", "nope", "--size", "1").returncode == 2
    assert cli("pool", "create", "p", "--from", snap, "--size", "0").returncode == 2
    assert cli("run", "--pool", "nope").returncode == 2
    proc = cli("run", "x", "--pool", "p")
    assert proc.returncode == 2 and "--pool" in proc.stderr
