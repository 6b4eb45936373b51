"""The commands that read stored records (`ls`, `inspect`, `--version`) do not import the
spec layer (`ls` not even click): vmkit validated each spec when it wrote the
record and a digest vouches for it. A hand-edited spec is validated again. Through the real
CLI, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import module_probe
from vmkit.store import MACHINE_FILE, Store

HEAVY = ("vmkit.spec", "vmkit.record", "click", "psutil")
# what `vmkit ls` of VMs that are not running has no use for (the records are plain
# classes, the state of a VM with no process needs no driver): the import costs of each
# are in docs/benchmarks.md
NOT_FOR_LS = (
    *HEAVY,
    "dataclasses",
    "typing",
    "tempfile",
    "subprocess",
    "vmkit.machine.facade",
    "vmkit.machine.host",
    "vmkit.drivers.base",
    "vmkit.hostinfo",
    "vmkit.sidecars",
)


def loaded(
    env: dict[str, str], *args: str, heavy: tuple[str, ...] = HEAVY
) -> tuple[list[str], str]:
    """The `heavy` modules `vmkit ARGS` loaded, and its stdout."""
    proc = subprocess.run(
        module_probe.argv(*args, watched=heavy), env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return module_probe.loaded(proc.stderr), proc.stdout


def test_reading_records_does_not_import_the_spec_layer(cli) -> None:
    cli.ok("create", "vm1")
    cli.ok("create", "vm2", "--memory", "512M")
    mods, out = loaded(cli.env, "ls", heavy=NOT_FOR_LS)
    assert "vm1" in out and "vm2" in out
    assert mods == [], mods  # no spec layer, no click, no psutil (nothing is running)
    mods, out = loaded(cli.env, "ls", "--json", heavy=NOT_FOR_LS)
    assert [vm["name"] for vm in json.loads(out)] == ["vm1", "vm2"]
    assert mods == [], mods
    full = subprocess.run([sys.executable, "-m", "vmkit.cli", "ls"], env=cli.env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert full.stdout == loaded(cli.env, "ls")[1]  # the click command's
    mods, _ = loaded(cli.env, "inspect", "vm1", "--json")
    assert "vmkit.spec" not in mods, mods  # the stored spec is not validated again
    mods, out = loaded(cli.env, "--version")
    assert mods == [] and "vmkit, version" in out


def test_a_hand_edited_spec_is_validated_again(cli) -> None:
    cli.ok("create", "vm1")
    path = Store(cli.home).vm_dir("vm1") / MACHINE_FILE
    record = json.loads(path.read_text())
    record["spec"]["cpus"] = 2  # valid edit: not broken, and validated (spec layer loaded)
    path.write_text(json.dumps(record))
    mods, _ = loaded(cli.env, "ls")
    assert "vmkit.spec" in mods
    assert cli.json("ls")[0]["state"] == "created"

    record["spec"]["cpus"] = "many"  # the digest no longer vouches: validation finds it
    path.write_text(json.dumps(record))
    (listed,) = cli.json("ls")
    assert listed["state"] == "broken" and "cpus" in listed["reason"]


def click_ls(env: dict[str, str], *args: str) -> str:
    full = subprocess.run([sys.executable, "-m", "vmkit.cli", "ls", *args], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert full.returncode == 0, full.stderr
    return full.stdout


def test_ls_prints_what_the_click_command_prints_for_every_kind_of_record(cli) -> None:
    """The console script's `ls` (views of the store) and the click command's (Host's
    Machines) print the same bytes, table and JSON, for good, edited, broken and
    cut-off records alike."""
    cli.ok("create", "vm1")
    cli.ok("create", "vm2", "--memory", "512M", "--cpus", "2")
    store = Store(cli.home)
    for name, change in {
        "bad-json": lambda r: None,
        "no-driver": lambda r: r.update(driver="nosuch"),
        "bad-spec": lambda r: r["spec"].update(cpus="many"),
        "edited": lambda r: r["spec"].update(cpus=3),
        "cut-off": lambda r: r.update(creating=True),
    }.items():
        cli.ok("create", name)
        path = store.vm_dir(name) / MACHINE_FILE
        record = json.loads(path.read_text())
        change(record)
        path.write_text("{oops" if name == "bad-json" else json.dumps(record))
    for args in ((), ("--json",)):
        _, out = loaded(cli.env, "ls", *args)
        assert out == click_ls(cli.env, *args)
    listed = {vm["name"]: vm for vm in cli.json("ls")}
    assert [listed[n]["state"] for n in ("bad-json", "no-driver", "bad-spec", "cut-off")] == [
        "broken"
    ] * 4
    assert "nosuch" in listed["no-driver"]["reason"]
    assert listed["edited"]["state"] == "created" and listed["edited"]["cpus"] == 3
