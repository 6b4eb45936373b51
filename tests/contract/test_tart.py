"""The tart driver against Tart's documented command line, with the Tart TEST DOUBLE
(tests/contract/tart_double.py) on PATH as `tart`. Tart cannot run here: nothing in this file
is evidence that a Tart VM boots, and docs/capabilities.md says "contract-tested"."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vmkit.drivers import get_driver
from vmkit.drivers.base import LaunchContext
from vmkit.drivers.tart import TartDriver, tartcli
from vmkit.errors import InvalidInput, NotSupported, SpecError
from vmkit.machine import Host
from vmkit.spec import spec_from_dict

DOUBLE = Path(__file__).resolve().parent / "tart_double.py"
IMAGE = "ghcr.io/cirruslabs/ubuntu:latest"


@pytest.fixture
def fake_tart(
    tmp_path: Path, vmkit_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Callable[[str, str], None]:
    """Put the double on PATH as `tart`; returns a setter for its environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "tart"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} {DOUBLE} "$@"\n')
    shim.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    log = tmp_path / "tart-calls.jsonl"

    def setenv(key: str, value: str) -> None:
        monkeypatch.setenv(key, value)
        vmkit_env[key] = value

    setenv("PATH", path)
    setenv("TART_DOUBLE_LOG", str(log))
    from vmkit.drivers import vmm_version

    vmm_version._binary_version.cache_clear()
    tartcli._help.cache_clear()
    return setenv


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "tart-calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def tart_spec(**over: Any) -> Any:
    data: dict[str, Any] = {
        "name": "t1",
        "driver": "tart",
        "boot": {"kind": "tart", "image": IMAGE},
        "networks": ["user"],
    }
    data.update(over)
    return spec_from_dict(data, check_files=False)


def ctx_for(tmp_path: Path) -> LaunchContext:
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir(exist_ok=True)
    return LaunchContext(
        vm_dir=vm_dir,
        serial_log=vm_dir / "serial.log",
        events_log=vm_dir / "e.log",
        sockets={},
        accelerator="hvf",
    )


# ---- argv ------------------------------------------------------------------------------------


def test_the_registry_gives_the_tart_driver() -> None:
    assert isinstance(get_driver("tart"), TartDriver)


@pytest.mark.capability("tart", "disk_raw", "shares", "rosetta", "net_user")
def test_run_argv_in_full(tmp_path: Path) -> None:
    disk, iso, src = tmp_path / "data.raw", tmp_path / "inst.iso", tmp_path / "src"
    disk.write_bytes(b"\0" * 512)
    iso.write_bytes(b"\0" * 512)
    src.mkdir()
    s = tart_spec(
        disks=[{"path": str(disk)}, {"path": str(iso), "readonly": True}],
        shares=[
            {"host": str(src), "tag": "src"},
            {"host": str(src), "tag": "ro", "readonly": True},
        ],
        rosetta=True,
    )
    plan = TartDriver(arch="aarch64").plan(s, ctx_for(tmp_path))
    vm = tmp_path / "vm"
    assert plan.argv[:2] == ["/usr/bin/env", f"TART_HOME={vm / 'tart'}"]
    assert plan.argv[3:] == [
        "run", "vm", "--no-graphics",
        f"--disk={disk}", f"--disk={iso}:ro",
        f"--dir={src}:tag=src", f"--dir={src}:ro,tag=ro",
        "--rosetta=rosetta",
    ]  # fmt: skip
    assert plan.sockets == {"tart": vm / "tart" / tartcli.CONTROL}


@pytest.mark.parametrize(
    ("over", "error", "match"),
    [
        ({"networks": []}, NotSupported, r"networks: a Tart VM always has one NIC"),
        ({"networks": [{"mode": "switch", "switch": "lan"}]}, NotSupported, r"networks\[0\]"),
        ({"networks": [{"mode": "user", "ip": "10.0.0.2/24"}]}, NotSupported, r"\.ip"),
        ({"networks": [{"mode": "user", "publish": ["8080:80"]}]}, NotSupported, r"\.publish"),
        ({"balloon": True}, NotSupported, "balloon"),
        ({"cloud_init": {}}, NotSupported, "cloud_init"),
        ({"disks": [{"size": "1G"}]}, NotSupported, r"disks\[0\]: .*existing raw images"),
    ],
)
def test_what_tart_cannot_do_is_refused_by_field(
    over: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        TartDriver(arch="aarch64").check(tart_spec(**over))


def test_colons_and_bad_tags_are_refused_because_tart_splits_on_them(tmp_path: Path) -> None:
    bad = tmp_path / "a:b"
    bad.mkdir()
    (bad / "d.raw").write_bytes(b"\0" * 512)
    with pytest.raises(InvalidInput, match=r"disks\[0\]\.path: .*contains ':'"):
        TartDriver().check(tart_spec(disks=[{"path": str(bad / "d.raw")}]))
    with pytest.raises(InvalidInput, match=r"shares\[0\]\.host: .*contains ':'"):
        TartDriver().check(tart_spec(shares=[{"host": str(bad), "tag": "x"}]))
    with pytest.raises(InvalidInput, match=r"mount tag"):  # the spec refuses it first, too
        tartcli.dir_option(tmp_path, "a,tag=b", readonly=False)


def test_tart_boot_and_the_tart_driver_go_together() -> None:
    with pytest.raises(SpecError, match=r"boot.kind 'tart' and driver: tart go together"):
        spec_from_dict({"name": "x", "boot": {"kind": "tart", "image": IMAGE}})
    with pytest.raises(SpecError, match=r"go together"):
        spec_from_dict({"name": "x", "driver": "tart", "boot": {"kernel": "/k"}}, check_files=False)
    with pytest.raises(SpecError, match=r"whole GiB"):
        tart_spec(boot={"kind": "tart", "disk_size": "1500M"})


def test_an_older_tart_without_dir_tags_is_refused_naming_its_version(
    fake_tart: Callable[[str, str], None], tmp_path: Path
) -> None:
    fake_tart("TART_DOUBLE_OLD", "1")
    fake_tart("TART_DOUBLE_VERSION", "1.6.0")
    s = tart_spec(shares=[{"host": str(tmp_path), "tag": "src"}])
    with pytest.raises(
        NotSupported, match=r"Tart 1\.6\.0 does not know `tart run --dir \.\.\.:tag"
    ):
        TartDriver(arch="aarch64").plan(s, ctx_for(tmp_path))
    TartDriver(arch="aarch64").plan(tart_spec(), ctx_for(tmp_path))  # no share: fine


# ---- the lifecycle through vmkit, with the double ----------------------------------------------


@pytest.mark.capability("tart", "boot_oci", "readiness", "graceful_stop", "readopt", "net_user")
def test_clone_set_run_ready_stop_rm(
    fake_tart: Callable[[str, str], None], tmp_path: Path, cli: Any
) -> None:
    cli.ok("create", "-f", str(write_spec(tmp_path, cpus=2, memory="1GiB")))
    status = cli.json("start", "t1", "--wait")
    vm_dir = Path(os.environ["VMKIT_HOME"]) / "vms" / "t1"
    home = vm_dir / "tart"
    mac = cli.json("inspect", "t1")["spec"]["networks"][0]["mac"]
    config = json.loads((home / "vms" / "vm" / "config.json").read_text())
    assert config["macAddress"] == mac  # vmkit's pinned MAC, unique in its store
    octet = int(mac.split(":")[-1], 16) % 250 + 2
    assert status["state"] == "ready" and status["ip"] == f"192.168.64.{octet}"
    made = [c["argv"] for c in calls(tmp_path) if c["argv"][0] in ("clone", "set", "create")]
    assert made == [["clone", IMAGE, "vm"], ["set", "vm", "--cpu", "2", "--memory", "1024"]]
    assert (config["cpuCount"], config["memorySize"]) == (2, 1 << 30)
    assert all(c["TART_HOME"] == str(home) for c in calls(tmp_path) if c["TART_HOME"])
    assert (home / "cache").resolve() == (Path(os.environ["VMKIT_HOME"]) / "tart-cache")
    assert oct((home).stat().st_mode & 0o777) == "0o700"
    inspect = cli.json("inspect", "t1")
    assert inspect["vmm"]["tart"]["State"] == "running"
    assert [v["state"] for v in cli.json("ls")] == ["ready"]
    result = cli.json("stop", "t1", "--timeout", "10")[0]
    assert result["step"] == "acpi"
    assert ["stop", "vm", "--timeout", "86400"] in [c["argv"] for c in calls(tmp_path)]
    assert cli.json("ls")[0]["state"] == "stopped"
    cli.ok("start", "t1", "--wait")  # a second start reuses the VM: no second clone
    assert [c["argv"][0] for c in calls(tmp_path)].count("clone") == 1
    cli.ok("kill", "t1")
    cli.ok("rm", "t1")
    assert not vm_dir.exists()  # the VM's Tart store went with it


@pytest.mark.capability("tart", "kill")
def test_an_empty_linux_vm_is_created_then_killed(
    fake_tart: Callable[[str, str], None], tmp_path: Path
) -> None:
    spec = tart_spec(name="t2", boot={"kind": "tart", "disk_size": "60G"})
    machine = Host().create(spec)
    machine.start()
    assert machine.wait_ready(20).state == "ready"
    assert ["create", "vm", "--linux", "--disk-size", "60"] in [c["argv"] for c in calls(tmp_path)]
    machine.kill()
    assert machine.status().state == "stopped"


def test_a_clone_of_an_unknown_image_fails_start_with_tarts_words(
    fake_tart: Callable[[str, str], None], tmp_path: Path
) -> None:
    machine = Host().create(tart_spec(name="t3", boot={"kind": "tart", "image": "no such"}))
    from vmkit.errors import VmkitError

    with pytest.raises(VmkitError, match=r"`tart clone no such vm` failed .*neither a remote"):
        machine.start()
    assert machine.status().state == "created"


def test_doctor_reports_tart_and_its_version(fake_tart: Callable[[str, str], None]) -> None:
    import shutil

    from vmkit.macos_host import doctor_facts

    facts = doctor_facts(macos="15.1", machine="arm64", which=shutil.which)
    assert facts["tart"]["version"] == "2.22.4"
    assert any("Fair Source" in item for item in facts["tart"]["enables"])


def write_spec(tmp_path: Path, **over: Any) -> Path:
    data = {"name": "t1", "driver": "tart", "boot": {"kind": "tart", "image": IMAGE},
            "networks": ["user"], **over}  # fmt: skip
    path = tmp_path / "t1.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.capability("tart", "boot_oci")
def test_image_pull_oci_fills_the_cache_every_tart_vm_shares(
    fake_tart: Callable[[str, str], None], tmp_path: Path, cli: Any
) -> None:
    out = cli.json("image", "pull", f"oci://{IMAGE}")
    home = Path(os.environ["VMKIT_HOME"])
    assert out["cache"] == str(home / "tart-cache")
    pulls = [c for c in calls(tmp_path) if c["argv"][0] == "pull"]
    assert pulls == [{"argv": ["pull", IMAGE], "TART_HOME": str(home / "tart-pull")}]
    cli.ok("create", "-f", str(write_spec(tmp_path)))
    cli.ok("start", "t1", "--wait")
    config = json.loads((home / "vms" / "t1" / "tart" / "vms" / "vm" / "config.json").read_text())
    assert config["fromCache"]  # the clone found the pulled image in the shared cache
    cli.ok("kill", "t1")
    bad = cli("image", "pull", "oci://-x")
    assert bad.returncode == 2 and "is not an OCI reference" in bad.stderr


@pytest.mark.capability("tart", "net_vmnet")
def test_vmnet_modes_are_tarts_own_network_flags_and_start_no_helper(
    fake_tart: Callable[[str, str], None], tmp_path: Path
) -> None:
    for net, flag in (
        ({"mode": "vmnet", "vmnet": "bridged", "interface": "en0"}, ["--net-bridged=en0"]),
        ({"mode": "vmnet", "vmnet": "host"}, ["--net-host"]),
        ({"mode": "vmnet", "vmnet": "shared"}, []),  # Tart's default NAT is vmnet's shared
    ):
        plan = TartDriver(arch="aarch64").plan(tart_spec(networks=[net]), ctx_for(tmp_path))
        assert plan.argv[6:] == flag and "vmnet0" not in plan.sockets
    machine = Host().create(
        tart_spec(name="t4", networks=[{"mode": "vmnet", "vmnet": "bridged", "interface": "en0"}])
    )
    machine.start()  # no vmnet-helper on PATH: none is asked for
    assert machine.wait_ready(20).state == "ready"
    run = next(c["argv"] for c in calls(tmp_path) if c["argv"][:2] == ["run", "vm"])
    assert run == ["run", "vm", "--no-graphics", "--net-bridged=en0"]
    assert not [h for h in machine.runtime().to_json().get("helpers", []) if h["kind"] == "vmnet"]
    machine.kill()
