"""Cloud Hypervisor driver against CH's real OpenAPI spec and documented command line.

Every request body the driver sends, for a matrix of specs, validates against the schema in
../shared/reference/cloud-hypervisor-openapi.yaml (loaded at test time, made strict: a
property the schema does not name is an error). Control is exercised against CHDouble, a
named test double. Nothing here runs Cloud Hypervisor.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from ch_double import CHDouble

from vmkit.drivers.base import LaunchContext
from vmkit.drivers.ch_api import CHError
from vmkit.drivers.cloud_hypervisor import CloudHypervisorDriver, restored_config, vm_config
from vmkit.errors import InvalidInput, NotSupported
from vmkit.spec import Disk, Network, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
REL = Path("shared/reference/cloud-hypervisor-openapi.yaml")


def _find_openapi() -> Path:
    """VMKIT_CH_OPENAPI, else `shared/reference/` beside this checkout or any folder above it
    (the project keeps it at ../shared/reference; a CI clone may sit deeper)."""
    explicit = os.environ.get("VMKIT_CH_OPENAPI")
    if explicit:
        return Path(explicit)
    for parent in ROOT.parents:
        if (parent / REL).is_file():
            return parent / REL
    return ROOT.parent / REL


OPENAPI = _find_openapi()
CAP = pytest.mark.capability


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    if not OPENAPI.is_file():
        pytest.skip(f"Cloud Hypervisor's OpenAPI spec not found at {OPENAPI} (VMKIT_CH_OPENAPI)")
    doc: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
    return doc


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def validate(openapi: dict[str, Any], schema_name: str, body: Any) -> None:
    import jsonschema

    components = _strict(copy.deepcopy(openapi["components"]))
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components}
    jsonschema.Draft202012Validator(schema).validate(body)


def request_schema(openapi: dict[str, Any], endpoint: str) -> str | None:
    op = openapi["paths"][f"/{endpoint}"]["put"]
    body = op.get("requestBody")
    if body is None:
        return None
    ref = body["content"]["application/json"]["schema"]["$ref"]
    return str(ref.rsplit("/", 1)[1])


def ctx(tmp_path: Path) -> LaunchContext:
    return LaunchContext(
        vm_dir=tmp_path,
        serial_log=tmp_path / "serial.log",
        events_log=tmp_path / "vmm-events.log",
        sockets={"api": tmp_path / "ch.api"},
        accelerator="kvm",
    )


SPECS: list[dict[str, Any]] = [
    {},
    {
        "cpus": 4,
        "memory": "1G",
        "boot": {"kernel": "/k/vmlinux", "initrd": "/k/initrd", "cmdline": "quiet"},
    },
    {"disks": [{"path": "/d/a.img"}, {"path": "/d/b.qcow2", "format": "qcow2", "readonly": True}]},
    {
        "networks": [
            {"mode": "tap", "tap": "vmtap0"},
            {"mode": "tap", "tap": "t1", "mac": "52:54:00:12:34:56"},
        ]
    },
    {"rng": False, "balloon": True},
    {"shares": [{"host": "/srv", "tag": "srv"}]},
    {"cpus": 2, "max_cpus": 8, "memory": "512M", "max_memory": "4G"},
    {
        "cpus": 4,
        "topology": {"threads_per_core": 2, "cores_per_die": 2},
        "hugepages": True,
        "vsock_cid": 5,
        "disks": [{"path": "/d/a.img", "iops": 500, "bandwidth": "50M"}],
    },
]


def make_spec(extra: dict[str, Any]) -> Any:
    data = {"name": "chvm", "boot": {"kernel": "/k/vmlinux"}, "accelerator": "kvm", **extra}
    return spec_from_dict(data, check_files=False)


@CAP("cloud-hypervisor", "boot_linux", "disk_raw", "disk_qcow2", "net_tap", "rng", "balloon")
@pytest.mark.parametrize("extra", SPECS, ids=[str(i) for i in range(len(SPECS))])
def test_vm_create_bodies_validate_against_the_openapi_spec(openapi, tmp_path, extra):
    spec = make_spec(extra)
    plan = CloudHypervisorDriver().plan(spec, ctx(tmp_path))
    reqs = [r.to_json() for r in plan.api_requests]
    nics = ["vm.add-net"] * len(spec.networks)  # each with its TAP's fd, before the boot
    assert [r["endpoint"] for r in reqs] == ["vm.create", *nics, "vm.boot"]
    assert [r["pass_fd"]["tap"] for r in reqs if "pass_fd" in r] == [n.tap for n in spec.networks]
    for req in reqs:
        assert f"/{req['endpoint']}" in openapi["paths"]
        schema = request_schema(openapi, req["endpoint"])
        if schema is None:
            assert req["body"] is None
        else:
            validate(openapi, schema, req["body"])
    body = reqs[0]["body"]
    assert body["serial"] == {"mode": "File", "file": str(tmp_path / "serial.log")}
    assert body["console"] == {"mode": "Off"}
    assert body["cpus"]["boot_vcpus"] == spec.cpus and body["memory"]["size"] == spec.memory
    assert "net" not in body  # a TAP named here would be opened (and addressed) by CH itself
    assert all("tap" not in r["body"] for r in reqs[1:-1])
    sockets = {k: str(v) for k, v in plan.all_sockets().items()}
    for i, share in enumerate(body.get("fs", [])):
        assert share["socket"] == sockets[f"fs{i}"]  # where vmkit starts that virtiofsd
    if "vsock" in body:
        assert body["vsock"]["socket"] == sockets["vsock"]  # removed with the VM's sockets


def test_a_field_the_spec_does_not_know_fails_validation(openapi, tmp_path):
    import jsonschema

    body = vm_config(make_spec({}), ctx(tmp_path))
    body["payload"]["kernal"] = "/typo"
    with pytest.raises(jsonschema.ValidationError):
        validate(openapi, "VmConfig", body)


ARG_RE = re.compile(r"^[a-z_]+=[^,]+(,[a-z_]+=[^,]+)*$")
KEYS = {"--api-socket": {"path", "fd"}, "--event-monitor": {"path", "fd"}}


def test_argv_follows_the_documented_flag_grammar(tmp_path):
    argv = CloudHypervisorDriver().plan(make_spec({}), ctx(tmp_path)).argv
    assert Path(argv[0]).name == "cloud-hypervisor"
    flags = argv[1:]
    assert len(flags) % 2 == 0
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        assert flag in KEYS, flag
        assert ARG_RE.match(value), value
        assert {kv.split("=")[0] for kv in value.split(",")} <= KEYS[flag]


def test_what_ch_cannot_do_is_refused_before_anything_runs(tmp_path):
    drv = CloudHypervisorDriver()
    with pytest.raises(NotSupported, match="no 'nat' networking"):
        drv.check(make_spec({"networks": ["nat"]}))
    with pytest.raises(NotSupported, match="no 'switch' networking"):
        drv.check(make_spec({"networks": ["switch:lan"]}))
    with pytest.raises(InvalidInput, match="runs only on KVM"):
        drv.check(make_spec({"accelerator": "tcg"}))


@CAP("cloud-hypervisor", "graceful_stop", "pause", "reboot", "readopt")
def test_control_against_the_double(openapi, tmp_path):
    drv = CloudHypervisorDriver()
    c = ctx(tmp_path)
    plan = drv.plan(make_spec({}), c)
    sockets = {"api": str(c.sockets["api"])}
    assert drv.bind(sockets, Path(".")).state() is None  # nothing listening yet
    with CHDouble(c.sockets["api"]) as ch:
        assert drv.bind(sockets, Path(".")).state() == "starting"  # VMM up, no VM yet
        drv.bind(sockets, Path(".")).after_launch(plan)
        assert ch.state == "Running" and drv.bind(sockets, Path(".")).state() == "running"
        drv.bind(sockets, Path(".")).pause()
        assert drv.bind(sockets, Path(".")).state() == "paused"
        drv.bind(sockets, Path(".")).resume()
        drv.bind(sockets, Path(".")).reboot()
        ch.ignore_power_button = True
        drv.bind(sockets, Path(".")).power_button()
        assert drv.bind(sockets, Path(".")).state() == "running"  # the guest ignored it
        assert drv.bind(sockets, Path(".")).hard_stop() == "vm.shutdown"
        assert [e for _m, e, _b in ch.requests][-2:] == ["vm.shutdown", "vmm.shutdown"]
        for method, endpoint, _body in ch.requests:
            assert f"/{endpoint}" in openapi["paths"]
            assert method.lower() in openapi["paths"][f"/{endpoint}"]


def test_ch_errors_carry_its_text(tmp_path):
    drv = CloudHypervisorDriver()
    c = ctx(tmp_path)
    sockets = {"api": str(c.sockets["api"])}
    with CHDouble(c.sockets["api"]) as ch:
        with pytest.raises(CHError, match=r"HTTP 404: The request vm.pause failed: VM is not cr"):
            drv.bind(sockets, Path(".")).pause()  # the cause chain, not CH's JSON array
        ch.fail["vm.create"] = (
            500,
            '["Error from API","The VM could not be created","Cannot open kernel"]',
        )
        with pytest.raises(
            CHError, match=r"HTTP 500: The VM could not be created: Cannot open kernel$"
        ):
            drv.bind(sockets, Path(".")).after_launch(drv.plan(make_spec({}), c))


@CAP(
    "cloud-hypervisor",
    "snapshot",
    "hotplug_disk",
    "hotplug_share",
    "migrate",
    "resize",
    "counters",
)
def test_advanced_verb_bodies_validate(openapi, tmp_path):
    drv = CloudHypervisorDriver()
    c = ctx(tmp_path)
    sockets = {"api": str(c.sockets["api"])}
    state = tmp_path / "snap"
    state.mkdir()
    with CHDouble(c.sockets["api"]) as ch:
        ch.ack_delay = 1.0  # the guest has not let hd0 go when it is asked again (detach_net)
        drv.bind(sockets, Path(".")).after_launch(drv.plan(make_spec({}), c))
        drv.bind(sockets, Path(".")).attach_disk(
            Disk(path=Path("/d/x.qcow2"), format="qcow2"), "hd0"
        )
        drv.bind(sockets, Path(".")).attach_share("docs", "/tmp/vk/x.hs0", "hs0")
        drv.bind(sockets, Path(".")).detach_share("hs0")
        drv.bind(sockets, Path(".")).detach_disk("hd0")
        drv.bind(sockets, Path(".")).detach_net("hd0")
        while ch.pending:  # the guest acknowledges the ejects; then it can be snapshot
            time.sleep(0.02)
        drv.bind(sockets, Path(".")).pause()
        meta = drv.bind(sockets, Path(".")).save_state(state)
        assert meta["files"] == ["config.json", "memory-ranges", "state.json"]
        drv.bind(sockets, Path(".")).resume()
        # one 128 MiB hotplug block more (CH's ACPI memory hotplug)
        drv.bind(sockets, Path(".")).resize(1, (256 + 128) << 20)
        assert drv.bind(sockets, Path(".")).counters() == {
            "_disk0": {"read_bytes": 4096, "write_bytes": 0}
        }
        drv.bind(sockets, Path(".")).send_migration("unix:/tmp/x.mig", 30)
        for method, endpoint, body in ch.requests:
            if method == "PUT" and body is not None:
                name = request_schema(openapi, endpoint)
                assert name is not None, endpoint
                validate(openapi, name, body)
    (tmp_path / "r").mkdir()
    c2 = ctx(tmp_path / "r")
    spec2 = make_spec({"name": "chvm-1"})
    plan = drv.plan_restore(spec2, c2, state, meta)
    # a bare VMM: the VM comes from the snapshot
    assert plan.launch.argv == drv.plan(spec2, c2).argv
    with CHDouble(c2.sockets["api"]) as ch2:
        plan.stage()
        drv.bind({"api": str(c2.sockets["api"])}, Path(".")).complete_restore(plan, 30)
        assert [e for _m, e, _b in ch2.requests] == ["vm.restore", "vm.info"]
        validate(openapi, "RestoreConfig", ch2.bodies("vm.restore")[0])
        assert ch2.state == "Running"  # `resume: true`: no vm.resume round trip
    body = {"receiver_url": "unix:/tmp/x.mig"}
    validate(openapi, "ReceiveMigrationData", body)


def ch_events(*names: str) -> str:
    """An event-monitor file as CH writes it (event_monitor: serde_json::to_string_pretty,
    then the monitor thread adds a blank line after each record)."""
    out = []
    for i, name in enumerate(names):
        source, event = name.split(":")
        record = {"timestamp": {"secs": i, "nanos": 29143000}, "source": source, "event": event}
        out.append(json.dumps({**record, "properties": None}, indent=2) + "\n\n")
    return "".join(out)


GUEST_POWEROFF = ("vm:shutdown", "vm:deleted", "vmm:shutdown")  # CH's vmm_shutdown()


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (("vmm:starting", "vm:booting", "vm:booted", *GUEST_POWEROFF), (True, "guest shutdown")),
        (("vmm:starting", "vm:booted"), None),  # killed or crashed: nothing was logged
        # a reboot shuts the old VM down first; a crash after it is still a crash
        (("vm:booted", "vm:rebooting", "vm:shutdown", "vm:booted", "vm:rebooted"), None),
        (("vm:booted", "vm:rebooting", "vm:rebooted", *GUEST_POWEROFF), (True, "guest shutdown")),
        (("vm:booted", "guest:panic"), (False, "guest panic")),
        (("vm:restoring", "vm:restored", "vm:deleted", "vmm:shutdown"), (True, "VMM shutdown")),
    ],
)
def test_exit_cause_from_chs_event_monitor_format(tmp_path, events, expected):
    drv = CloudHypervisorDriver()
    c = ctx(tmp_path)
    c.events_log.write_text(ch_events(*events))
    cause = drv.exit_cause(c)
    assert (None if cause is None else (cause.clean, cause.reason)) == expected


def test_exit_cause_survives_a_half_written_last_event(tmp_path):
    c = ctx(tmp_path)
    c.events_log.write_text(ch_events("vm:booted", *GUEST_POWEROFF) + '{\n  "timestamp": {\n')
    cause = CloudHypervisorDriver().exit_cause(c)
    assert cause is not None and cause.clean
    assert CloudHypervisorDriver().exit_cause(ctx(tmp_path / "none")) is None  # no file


def test_force_shutdown_reports_the_step_that_worked(tmp_path):
    drv = CloudHypervisorDriver()
    c = ctx(tmp_path)
    sockets = {"api": str(c.sockets["api"])}
    with CHDouble(c.sockets["api"]) as ch:
        ch.state = "Created"  # never booted: vm.shutdown has nothing to stop (real CH: 500)
        ch.config = {}
        assert drv.bind(sockets, Path(".")).hard_stop() == "vmm.shutdown"
        assert [e for _m, e, _b in ch.requests] == ["vm.shutdown", "vmm.shutdown"]
    with pytest.raises(CHError, match="no answer"):  # nobody there: SIGTERM comes next
        drv.bind(sockets, Path(".")).hard_stop()


def test_a_bzimage_is_booted_as_its_extracted_pvh_vmlinux(openapi, tmp_path):
    from vmkit.guest.build import find_built
    from vmkit.storage.kernel import has_pvh_note

    built = find_built()
    if built is None:
        pytest.skip("the tiny guest (a real Debian bzImage) is not built: vmkit guest build")
    spec = spec_from_dict(
        {"name": "bz", "boot": {"kernel": str(built.bzimage)}, "accelerator": "kvm"},
        check_files=False,
    )
    c = ctx(tmp_path)
    drv = CloudHypervisorDriver()
    body = drv.plan(spec, c).api_requests[0].body
    assert body["payload"]["kernel"] == str(tmp_path / "vmlinux")
    validate(openapi, "VmConfig", body)
    assert not (tmp_path / "vmlinux").exists()  # planning (--dry-run) makes nothing
    drv.prepare(spec, c)
    assert has_pvh_note((tmp_path / "vmlinux").read_bytes())


def test_vmkit_cloud_hypervisor_names_the_binary(tmp_path, monkeypatch):
    from vmkit.errors import VmkitError

    fake = tmp_path / "my-ch"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("VMKIT_CLOUD_HYPERVISOR", str(fake))
    assert CloudHypervisorDriver().find_binary() == str(fake)
    monkeypatch.setenv("VMKIT_CLOUD_HYPERVISOR", str(tmp_path / "missing"))
    with pytest.raises(VmkitError, match=r"VMKIT_CLOUD_HYPERVISOR=.* is not an executable"):
        CloudHypervisorDriver().find_binary()
    monkeypatch.delenv("VMKIT_CLOUD_HYPERVISOR")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(VmkitError, match="cloud-hypervisor not found on PATH: install Cloud"):
        CloudHypervisorDriver().find_binary()


def test_on_demand_restore_body(openapi, tmp_path):
    drv = CloudHypervisorDriver()
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "config.json").write_text(json.dumps(vm_config(make_spec({}), ctx(tmp_path))))
    (snap / "state.json").write_text("{}")
    c = ctx(tmp_path)
    meta = {"memory_restore": "ondemand", "files": ["config.json", "state.json"]}
    plan = drv.plan_restore(make_spec({}), c, snap, meta)
    with CHDouble(c.sockets["api"]) as ch:
        plan.stage()
        drv.bind({"api": str(c.sockets["api"])}, Path(".")).complete_restore(plan, 30)
        body = ch.bodies("vm.restore")[0]
    assert body["memory_restore_mode"] == "OnDemand"
    validate(openapi, "RestoreConfig", body)


def test_qcow2_with_a_missing_backing_file_is_refused_before_launch(tmp_path):
    import subprocess

    base = tmp_path / "base.img"
    base.write_bytes(bytes(1 << 20))
    overlay = tmp_path / "ov.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(overlay)],
        check=True,
    )
    spec = make_spec({"disks": [{"path": str(overlay), "format": "qcow2"}]})
    CloudHypervisorDriver().check(spec)  # fine while the base exists
    base.unlink()
    with pytest.raises(InvalidInput, match=r"disks\[0\].*overlay of .*base.img, which does not"):
        CloudHypervisorDriver().check(spec)


@pytest.mark.access_path("ch-hybrid-vsock", "contract")
def test_topology_limits_and_vsock_map_onto_vm_config(tmp_path):
    body = vm_config(make_spec(SPECS[-1]), ctx(tmp_path))
    assert body["cpus"]["topology"] == {
        "threads_per_core": 2,
        "cores_per_die": 2,
        "dies_per_package": 1,
        "packages": 1,
    }
    assert body["memory"]["hugepages"] is True
    assert body["vsock"]["cid"] == 5 and body["vsock"]["socket"].endswith(".vsock")
    assert body["disks"][0]["rate_limiter_config"] == {
        "bandwidth": {"size": 50 << 20, "refill_time": 1000},
        "ops": {"size": 500, "refill_time": 1000},
    }
    with pytest.raises(Exception, match="topology has 2 vCPUs"):
        make_spec({"cpus": 4, "topology": {"threads_per_core": 2}})


@pytest.fixture
def netns_tap():
    """A TAP made by `ip` in a fresh network namespace (root only), removed afterwards."""
    import subprocess
    import uuid

    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.skip("TAPs and network namespaces need root and /dev/net/tun")
    ns, name = f"vkch-{uuid.uuid4().hex[:6]}", "vkchtap0"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for tap in (name, f"{name}h"):
            subprocess.run(["ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
        yield ns, name
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@CAP("cloud-hypervisor", "net_tap", "hotplug_net")
def test_tap_nics_reach_ch_as_fds_even_from_another_namespace(openapi, tmp_path, netns_tap):
    """CH opens a TAP named in its config itself: in its own namespace, where a TAP in a
    netns does not exist, and failing (EBUSY) while another fd holds it. vmkit hands it the
    TAP's fd instead; the double checks that what arrives is that TAP (TUNGETIFF)."""
    from vmkit.net import tap as taps

    ns, name = netns_tap
    drv = CloudHypervisorDriver()
    c = ctx(tmp_path)
    sockets = {"api": str(c.sockets["api"])}
    spec = make_spec({"networks": [{"mode": "tap", "tap": name, "netns": ns}]})
    plan = drv.plan(spec, c)
    with CHDouble(c.sockets["api"]) as ch:
        drv.bind(sockets, Path(".")).after_launch(plan)
        assert ch.state == "Running" and ch.received_taps == [name]
        (add,) = ch.bodies("vm.add-net")
        assert "tap" not in add and add["id"] == "net0"
        validate(openapi, "NetConfig", add)
        # hot-plug: the same, into the running VM
        hot = Network(mode="tap", tap=f"{name}h", netns=ns)
        drv.bind(sockets, Path(".")).attach_net(hot, "hn0", "52:54:00:aa:bb:cc")
        assert ch.received_taps == [name, f"{name}h"]
        validate(openapi, "NetConfig", ch.bodies("vm.add-net")[-1])
        drv.bind(sockets, Path(".")).detach_net("hn0")
        with pytest.raises(Exception, match=r"'nope' in network namespace .* does not exist"):
            drv.bind(sockets, Path(".")).attach_net(
                Network(mode="tap", tap="nope", netns=ns), "hn1", "52:54:00:aa:bb:cd"
            )
    # what CH would do with the TAP named in its config while vmkit holds an fd to it
    fd, _created = taps.open_tap(name, ns)
    try:
        with taps._in_netns(ns), CHDouble(tmp_path / "by-name.api") as ch:
            assert ch._open_tap_by_name(name) is not None  # EBUSY
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("ch_state", "vmkit_state"),
    [
        ("Created", "starting"),
        ("Running", "running"),
        ("Paused", "paused"),
        ("BreakPoint", "paused"),
        ("Shutdown", "stopping"),
    ],
)
def test_every_vm_state_in_the_spec_maps_to_a_vmkit_state(openapi, tmp_path, ch_state, vmkit_state):
    assert ch_state in openapi["components"]["schemas"]["VmState"]["enum"]
    c = ctx(tmp_path)
    with CHDouble(c.sockets["api"]) as ch:
        ch.state, ch.config = ch_state, {}
        assert (
            CloudHypervisorDriver().bind({"api": str(c.sockets["api"])}, Path(".")).state()
            == vmkit_state
        )


def test_memory_that_is_not_whole_huge_pages_is_refused_before_launch():
    drv = CloudHypervisorDriver()
    drv.check(make_spec({"memory": "258M", "hugepages": True}))
    with pytest.raises(InvalidInput, match=r"memory: 257 MiB is not a whole number of 2 MiB huge"):
        drv.check(make_spec({"memory": "257M", "hugepages": True}))
    with pytest.raises(InvalidInput, match="max_memory: 1025 MiB"):
        drv.check(make_spec({"memory": "256M", "max_memory": "1025M", "hugepages": True}))
    drv.check(make_spec({"memory": "257M"}))  # ordinary pages: any whole MiB


def test_live_migration_of_a_vm_with_nics_is_refused_before_anything_starts(tmp_path):
    spec = make_spec({"networks": [{"mode": "tap", "tap": "t0"}]})
    with pytest.raises(NotSupported, match="cannot live-migrate a VM with NICs"):
        CloudHypervisorDriver().plan_incoming(spec, ctx(tmp_path), "unix:/tmp/x.mig")


def test_restored_config_repoints_every_per_vm_path(tmp_path):
    src = make_spec(
        {
            "disks": [{"path": "/src/a.img"}, {"path": "/shared/base.img", "readonly": True}],
            "networks": [{"mode": "tap", "tap": "tsrc"}],
            "vsock_cid": 3,
        }
    )
    (tmp_path / "src").mkdir()
    saved = vm_config(src, ctx(tmp_path / "src"))
    saved["net"] = [{"fds": [12], "mac": "52:54:00:00:00:01", "id": "net0", "num_queues": 2}]
    copy_spec = make_spec(
        {
            "name": "copy",
            "disks": [{"path": "/copy/disk0.raw"}, {"path": "/shared/base.img", "readonly": True}],
            "networks": [{"mode": "tap", "tap": "tcopy", "mac": "52:54:00:00:00:02"}],
            "vsock_cid": 3,
        }
    )
    c = ctx(tmp_path)
    cfg = restored_config(saved, copy_spec, c)
    assert [d["path"] for d in cfg["disks"]] == ["/copy/disk0.raw", "/shared/base.img"]
    assert cfg["serial"] == {"mode": "File", "file": str(c.serial_log)}
    # no TAP name (CH would open it in its own namespace): its fd comes with vm.restore
    assert cfg["net"] == [{"mac": "52:54:00:00:00:02", "id": "net0", "num_queues": 2, "fds": [-1]}]
    assert cfg["vsock"]["socket"] == str(c.sockets["api"].with_suffix(".vsock"))
    assert cfg["memory"] == saved["memory"] and cfg["payload"] == saved["payload"]
    assert saved["disks"][0]["path"] == "/src/a.img"  # the snapshot's own copy is untouched
    with pytest.raises(Exception, match=r"config\.json has 2 disks, the VM spec 0"):
        restored_config(saved, make_spec({"networks": copy_spec.to_json()["networks"]}), c)


@CAP("cloud-hypervisor", "boot_efi")
def test_an_efi_boot_sends_the_firmware_as_the_payload(
    openapi, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    from vmkit.drivers import cloud_hypervisor as chmod
    from vmkit.errors import NotFound

    fw = tmp_path / "CLOUDHV.fd"
    fw.write_bytes(b"\0" * 4096)
    spec = make_spec({"boot": {"kind": "efi"}, "disks": [{"path": "/d/cloud.raw"}]})
    monkeypatch.setenv(chmod.FIRMWARE_ENV, str(fw))
    body = CloudHypervisorDriver().plan(spec, ctx(tmp_path)).api_requests[0].body
    validate(openapi, request_schema(openapi, "vm.create"), body)
    assert body["payload"] == {"firmware": str(fw)}
    given = make_spec({"boot": {"kind": "efi", "firmware": str(fw)}, "disks": [{"path": "/d/x"}]})
    monkeypatch.delenv(chmod.FIRMWARE_ENV)
    monkeypatch.setattr(chmod, "FIRMWARE_DIRS", (str(tmp_path / "nowhere"),))
    assert vm_config(given, ctx(tmp_path))["payload"] == {"firmware": str(fw)}
    with pytest.raises(NotFound, match=r"CLOUDHV\.fd.*boot\.firmware or \$VMKIT_CH_FIRMWARE"):
        CloudHypervisorDriver().check(spec)
