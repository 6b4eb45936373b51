"""Warm pools on real QEMU guests: copies restored from one snapshot, paused, handed out
unique under concurrent `vmkit run --pool`, each private, and refilled with no daemon."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

import module_probe


@pytest.fixture
def snap(cli, guest):
    cli.ok("run", "src", "--kernel", str(guest.kernel), "--initrd", str(guest.initrd),
           "--accel", "tcg", "--net", "nat")  # fmt: skip
    cli.ok("snapshot", "create", "src", "base")
    cli.ok("rm", "--force", "src")
    return "base"


# the console script's click-free hand-out (cli_direct.py) and the click command
BOTH_PATHS = (["-m", "vmkit"], ["-m", "vmkit.cli"])
READY_LINE = re.compile(r"warm-\d+ is READY in \d+\.\d\ds \(ip (10\.0\.2\.\d+|-), pid \d+\)\n")


def refilled(cli) -> dict:
    """The pool once its background filler (a short-lived process, no daemon) is done."""
    deadline = time.monotonic() + 240
    while True:
        (pool,) = cli.json("pool", "ls")
        if len(pool["members"]) == pool["size"] and not pool["filling"]:
            return pool
        assert time.monotonic() < deadline, pool
        time.sleep(1)


def test_a_pool_hands_out_unique_ready_copies_and_refills(cli, snap):
    made = cli.json("pool", "create", "warm", "--from", snap, "--size", "2")
    assert sorted(made["members"]) == ["warm-1", "warm-2"]
    vms = {vm["name"]: vm for vm in cli.json("ls")}
    assert vms["warm-1"]["state"] == vms["warm-2"]["state"] == "paused"
    # two hand-outs at once, one by each path: never the same copy
    direct = module_probe.argv("run", "--pool", "warm", "--json")  # the console script's
    by_click = [sys.executable, "-m", "vmkit.cli", "run", "--pool", "warm", "--json"]
    procs = [
        subprocess.Popen(
            argv, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for argv in (direct, by_click)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert module_probe.loaded(outs[0][1]) == []  # it loads nothing it does not use
    got = [json.loads(out) for out, _err in outs]
    assert sorted(g["name"] for g in got) == ["warm-1", "warm-2"]
    assert all(g["state"] == "ready" for g in got)
    assert list(got[0]) == list(got[1])  # the same record, field for field
    macs = {cli.json("inspect", g["name"])["spec"]["networks"][0]["mac"] for g in got}
    assert len(macs) == 2  # each copy has its own identity
    pool = refilled(cli)
    assert sorted(pool["members"]) == ["warm-3", "warm-4"]
    assert sorted(pool["handed_out"]) == ["warm-1", "warm-2"]
    # the text answer, by each path in turn
    for path in BOTH_PATHS:
        proc = subprocess.run([sys.executable, *path, "run", "--pool", "warm"], env=cli.env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0 and READY_LINE.fullmatch(proc.stdout), proc
    pool = refilled(cli)
    assert sorted(pool["handed_out"]) == [f"warm-{n}" for n in range(1, 5)]
    # pool rm removes the copies it holds; handed-out ones stay
    cli.ok("pool", "rm", "warm")
    names = {vm["name"] for vm in cli.json("ls")}
    assert names == {f"warm-{n}" for n in range(1, 5)}
    assert cli.json("pool", "ls") == []


def test_a_hand_out_skips_a_busy_copy_and_drops_a_dead_one(cli, snap, monkeypatch):
    """In this process, with no filler started: a copy another verb holds stays in
    the pool; one that is no longer paused leaves it and the store. A hand-out from the
    emptied pool fails, and starts its filler; the CLI's hand-out leaves the copies it
    drops to that filler."""
    from vmkit.errors import VmkitError
    from vmkit.machine import Host
    from vmkit.machine import pool as pool_mod
    from vmkit.machine.pool import Pools

    cli.ok("pool", "create", "p", "--from", snap, "--size", "2")
    host = Host(cli.home)
    pools = Pools(host)

    def no_filler(*_args: object) -> None:
        raise OSError(24, "Too many open files")

    answered: list = []
    with monkeypatch.context() as m, host.store.vm_lock("p-1", 5.0):  # e.g. a snapshot of it
        m.setattr(pool_mod, "start_filler", no_filler)
        warning = pool_mod.hand_out_then_refill(host.store, "p", answered.append)
    assert [(a.name, str(a.state)) for a in answered] == [("p-2", "ready")]
    # the copy was handed out: a filler that cannot start is a warning, not a failure
    assert warning is not None and "Too many open files" in warning
    assert "`vmkit pool fill p`" in warning
    assert pools.get("p").members == ["p-1"]
    cli.ok("kill", "p-1")
    with pytest.raises(VmkitError, match="no copy ready"):
        pools.take("p")
    assert pools.get("p").members == []  # the dead copy left the list (saved)
    assert "p-1" not in {vm["name"] for vm in cli.json("ls")}  # and the store, as prune does
    # an empty pool: each path answers so, and starts the filler it names
    for path in BOTH_PATHS:
        proc = subprocess.run([sys.executable, *path, "run", "--pool", "p"], env=cli.env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 1 and "no copy ready" in proc.stderr, proc
        assert "refilling" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    dead, alive = refilled(cli)["members"]
    # the console script's hand-out skips a dead copy and leaves it to the filler it
    # starts, which deletes it as prune does
    cli.ok("kill", dead)
    got = json.loads(cli.ok("run", "--pool", "p", "--json").stdout)
    assert got["name"] == alive and got["state"] == "ready"
    refilled(cli)
    assert dead not in {vm["name"] for vm in cli.json("ls")}


def test_pool_bad_input(cli, snap):
    assert cli("pool", "create", "p", "--from", "nope", "--size", "1").returncode == 2
    assert cli("pool", "create", "p", "--from", snap, "--size", "0").returncode == 2
    for args in (["--pool", "nope"], ["--pool=nope", "--json"], ["--pool", "../x"]):
        for path in BOTH_PATHS:  # the same answer from each path
            proc = subprocess.run([sys.executable, *path, "run", *args], env=cli.env,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert proc.returncode == 2 and proc.stdout == "", proc
            assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
            assert ("no pool named" in proc.stderr) == ("nope" in " ".join(args)), proc.stderr
    proc = cli("run", "x", "--pool", "p")
    assert proc.returncode == 2 and "--pool" in proc.stderr


def test_removing_a_pool_while_it_fills_leaves_no_copy_behind(cli, snap):
    """The filler restores a copy while `pool rm` runs: it deletes that copy, not leaves it
    running outside any pool."""
    from vmkit.machine import Host
    from vmkit.machine.pool import Pools

    cli.ok("pool", "create", "p", "--from", snap, "--size", "1")
    host = Host(cli.home)
    pools = Pools(host)
    assert pools.take("p").name == "p-1"  # in process: no filler started
    filler = subprocess.Popen(
        [sys.executable, "-m", "vmkit.machine.pool_filler", "--home", str(cli.home),
         "--fill", "p"], env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not host.store.exists("p-2"):  # its restore has begun
        assert time.monotonic() < deadline and filler.poll() is None
        time.sleep(0.01)
    assert pools.remove("p") == []  # p-2 is not a member yet
    out, _ = filler.communicate(timeout=120)
    assert filler.returncode == 0 and "was removed" in out, out
    assert [m.name for m in host.machines()] == ["p-1"]
