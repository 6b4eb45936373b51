"""The commands that read stored records (`ls`, `inspect`, `--version`) do not import the
spec layer (pydantic; `ls` not even click): vmkit validated each spec when it wrote the
record and a digest vouches for it. A hand-edited spec is validated again. Through the real
CLI, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from vmkit.store import MACHINE_FILE, Store

PROBE = """
import json, sys
from vmkit.entry import main
sys.argv = ["vmkit", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("pydantic", "vmkit.spec", "click", "psutil") if m in sys.modules)
print("MODULES " + json.dumps(heavy))
"""


def loaded(env: dict[str, str], *args: str) -> tuple[list[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES "))
    return json.loads(line.removeprefix("MODULES ")), proc.stdout


def test_reading_records_does_not_import_the_spec_layer(cli) -> None:
    cli.ok("create", "vm1")
    cli.ok("create", "vm2", "--memory", "512M")
    mods, out = loaded(cli.env, "ls")
    assert "vm1" in out and "vm2" in out
    assert mods == [], mods  # no spec layer, no click, no psutil (nothing is running)
    mods, out = loaded(cli.env, "ls", "--json")
    assert [vm["name"] for vm in json.loads(out.split("MODULES ")[0])] == ["vm1", "vm2"]
    assert mods == [], mods
    full = subprocess.run([sys.executable, "-m", "vmkit.cli", "ls"], env=cli.env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert full.stdout == loaded(cli.env, "ls")[1].split("MODULES ")[0]  # the click command's
    mods, _ = loaded(cli.env, "inspect", "vm1", "--json")
    assert "pydantic" not in mods, mods
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
