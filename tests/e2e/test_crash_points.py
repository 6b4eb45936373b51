"""Fault injection: the CLI killed (SIGKILL) at each named step of create, start, stop, rm,
restore and migrate. Afterwards `vmkit ls` tells the truth (a VMM that runs is shown
running, with its pid; nothing that is gone is shown alive), `vmkit gc` brings the store
back to a usable state, and nothing is left running: no invisible VMM, no leaked helper,
no stuck state. (vmkit kills itself at the step named by VMKIT_FAULT: vmkit/faults.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
import pytest

CLI = Any  # the `cli` fixture (tests/conftest.py)


def processes_of(home: Path) -> list[psutil.Process]:
    """Live processes (VMMs and helpers) whose argv names this store."""
    out = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or not proc.info["cmdline"]:
                continue
            if any(str(home) in arg for arg in proc.info["cmdline"]):
                out.append(proc)
        except psutil.Error:
            continue
    return out


def vmms_of(home: Path) -> list[psutil.Process]:
    return [p for p in processes_of(home) if "qemu-system" in p.info["cmdline"][0]]


def crash(cli: CLI, point: str, *args: str) -> None:
    cli.env["VMKIT_FAULT"] = point
    try:
        proc = cli(*args, timeout=120)
    finally:
        del cli.env["VMKIT_FAULT"]
    assert proc.returncode == -9, f"{point}: not reached ({proc.returncode}): {proc.stderr}"


def states(cli: CLI) -> dict[str, dict[str, object]]:
    return {vm["name"]: vm for vm in json.loads(cli.ok("ls", "--json").stdout)}


def assert_truthful(cli: CLI) -> None:
    """Every running VMM of this store is shown alive with its pid; no VM whose VMM is gone
    is shown alive."""
    running = {p.pid for p in vmms_of(cli.home)}
    shown = {vm["pid"] for vm in states(cli).values() if vm["pid"] is not None}
    assert running <= shown, f"invisible VMMs: {running - shown}"
    for vm in states(cli).values():
        if vm["state"] in ("starting", "running", "ready", "paused", "stopping"):
            assert vm["pid"] in running, vm


def assert_clean_after_rm(cli: CLI) -> None:
    for name in list(states(cli)):
        cli.ok("rm", "--force", name)
    cli.ok("gc")
    assert processes_of(cli.home) == [], "left running after rm + gc"


def tiny(cli: CLI, guest, name: str, *extra: str) -> list[str]:
    return [name, "--kernel", str(guest.kernel), "--initrd", str(guest.initrd), "--accel", "tcg",
            *extra]  # fmt: skip


@pytest.mark.parametrize(
    "point",
    ["launch:launch", "launch:spawn", "launch:runtime", "start:launched"],
)
def test_a_start_cut_off_leaves_no_invisible_vmm_and_no_second_copy(cli, guest, point):
    cli.ok("create", *tiny(cli, guest, "vm", "--new-disk", "16M"))
    crash(cli, point, "start", "vm")
    assert_truthful(cli)
    vm = states(cli)["vm"]
    if vmms_of(cli.home):  # the VMM got spawned: start must not launch a second one
        again = cli("start", "vm")
        assert again.returncode != 0 and len(vmms_of(cli.home)) == 1, again.stderr
        report = cli.json("gc")
        assert report["adopted"] in ([], ["vm"])
        assert states(cli)["vm"]["pid"] == vmms_of(cli.home)[0].pid
        cli.ok("wait", "vm", "--timeout", "120")
        assert cli.ok("stop", "vm").returncode == 0
    else:
        assert vm["state"] == "created", vm
        cli.ok("gc")
        cli.ok("start", "vm", "--wait")  # usable
        cli.ok("stop", "vm")
    assert vmms_of(cli.home) == []
    assert_clean_after_rm(cli)


def test_a_run_cut_off_after_spawning_is_adopted_and_stoppable(cli, guest):
    crash(cli, "launch:runtime", "run", *tiny(cli, guest, "r"))
    assert_truthful(cli)
    assert states(cli)["r"]["pid"] == vmms_of(cli.home)[0].pid
    assert cli.json("gc")["adopted"] == ["r"]
    cli.ok("kill", "r")
    assert vmms_of(cli.home) == []
    assert_clean_after_rm(cli)


def test_a_stop_cut_off_does_not_leave_the_vm_stopping(cli, guest):
    cli.ok("run", *tiny(cli, guest, "s"))
    crash(cli, "stop:stopping", "stop", "s")
    assert_truthful(cli)
    assert states(cli)["s"]["state"] == "ready"  # its stopper is gone: not "stopping"
    cli.ok("pause", "s")  # and verbs work again
    cli.ok("resume", "s")
    assert cli.json("stop", "s")[0]["step"] == "acpi"
    assert_clean_after_rm(cli)


@pytest.mark.parametrize("point", ["rm:killed", "rm:released"])
def test_an_rm_cut_off_can_be_finished(cli, guest, point):
    cli.ok("run", *tiny(cli, guest, "d", "--net", "switch:lan"))
    crash(cli, point, "rm", "--force", "d")
    assert_truthful(cli)
    assert vmms_of(cli.home) == []  # the VMM was killed before the cut
    cli.ok("gc")
    assert_clean_after_rm(cli)


def test_a_create_cut_off_while_making_disks_is_rolled_back(cli, guest):
    crash(cli, "create:files", "create", *tiny(cli, guest, "c", "--new-disk", "16M"))
    vm = states(cli)["c"]
    assert vm["state"] == "broken" and "cut off" in str(vm["reason"])
    assert cli("start", "c").returncode != 0
    assert cli.json("gc")["rolled_back"] == ["c"]
    assert "c" not in states(cli)
    cli.ok("create", *tiny(cli, guest, "c", "--new-disk", "16M"))  # the name is free again


def test_a_restore_cut_off_after_launch_is_visible_and_removable(cli, guest):
    cli.ok("run", *tiny(cli, guest, "src"))
    cli.ok("snapshot", "create", "src", "snap")
    crash(cli, "restore:launched", "restore", "snap", "--name", "copy")
    assert_truthful(cli)
    assert states(cli)["copy"]["pid"] is not None
    cli.ok("gc")
    assert_truthful(cli)
    assert_clean_after_rm(cli)


def test_a_migration_cut_off_leaves_the_source_running(cli, guest):
    cli.ok("run", *tiny(cli, guest, "a"))
    crash(cli, "migrate:target", "migrate", "a", "--to", "b")
    assert_truthful(cli)
    assert states(cli)["a"]["state"] == "ready"
    cli.ok("gc")
    cli.ok("rm", "--force", "b")
    assert cli.json("stop", "a")[0]["step"] == "acpi"  # the source is intact
    assert_clean_after_rm(cli)
