"""vmkit on the REAL Cloud Hypervisor binary, at VMM level (issue 13).

The binary: $VMKIT_CLOUD_HYPERVISOR, else ../shared/tools/cloud-hypervisor/ next to the
checkout (v54, see its README). On the CI machine /dev/kvm is kvm_pvm: CH creates and boots
the VM and its whole REST API is real, but the guest never finishes booting and its vCPU
dies after ~75-105 s (issue 13, bug A). So every test here drives vmkit with no wait for
readiness and ends well inside that window; nothing here claims a guest ran.

Snapshot, restore and migration use `cloud-hypervisor-kvmpvm`, the host-specific variant
from the same directory (the upstream binary's vm.snapshot fails on kvm_pvm with
GetNestedState(EINVAL); the variant treats exactly that as "no nested state"). When
$VMKIT_CLOUD_HYPERVISOR names a binary, it is used for everything.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT.parent / "shared" / "tools" / "cloud-hypervisor"
ENV = os.environ.get("VMKIT_CLOUD_HYPERVISOR")
UPSTREAM = Path(ENV) if ENV else TOOLS / "cloud-hypervisor"
KVMPVM = Path(ENV) if ENV else TOOLS / "cloud-hypervisor-kvmpvm"


def _kvm_opens() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return False
    return True


pytestmark = [
    pytest.mark.skipif(
        not (UPSTREAM.is_file() and os.access(UPSTREAM, os.X_OK)),
        reason=f"no Cloud Hypervisor binary at {UPSTREAM} (set VMKIT_CLOUD_HYPERVISOR)",
    ),
    pytest.mark.skipif(not _kvm_opens(), reason="/dev/kvm cannot be opened here"),
]
VMM = pytest.mark.vmm_capability
ARGS = ("--driver", "cloud-hypervisor", "--accel", "kvm", "--memory", "128M")


@pytest.fixture
def ch(cli, guest):
    """The CLI with the upstream binary; `ch.use(path)` switches binary."""

    def use(binary: Path) -> None:
        cli.env["VMKIT_CLOUD_HYPERVISOR"] = str(binary)

    use(UPSTREAM)
    cli.use = use
    cli.guest = guest
    return cli


def start(cli, name: str, *extra: str) -> dict:
    cli.ok("create", name, *ARGS, *extra)
    cli.ok("start", name)  # no --wait: the guest cannot boot here
    return cli.json("inspect", name)


def vm_info(cli, name: str) -> dict:
    """CH's own answer to GET vm.info (not vmkit's record)."""
    import httpx

    sock = cli.json("inspect", name)["runtime"]["sockets"]["api"]
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock)) as c:
        return c.get("http://localhost/api/v1/vm.info").json()


def fails(cli, *args: str) -> subprocess.CompletedProcess[str]:
    proc = cli(*args)
    assert proc.returncode != 0, f"vmkit {' '.join(args)} succeeded:\n{proc.stdout}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@VMM(
    "cloud-hypervisor",
    "boot_linux",
    "pause",
    "graceful_stop",
    "readopt",
    "rng",
    "balloon",
    "net_none",
)
def test_create_boot_pause_resume_twice_and_stop_escalation(ch):
    info = start(ch, "c1", "--balloon")
    assert info["status"]["state"] == "running"
    real = vm_info(ch, "c1")
    assert real["state"] == "Running"
    assert real["config"]["balloon"]["deflate_on_oom"] is True
    assert real["config"]["rng"]["src"] == "/dev/urandom"
    assert not real["config"].get("net")
    for _ in range(2):
        assert ch.json("pause", "c1")[0]["state"] == "paused"
    assert vm_info(ch, "c1")["state"] == "Paused"
    for _ in range(2):  # bug C: CH answers a second resume with 500 InvalidStateTransition
        assert ch.json("resume", "c1")[0]["state"] == "running"
    # The guest never booted, so it ignores the power button: vmkit escalates to vm.shutdown
    stopped = ch.json("stop", "c1", "--timeout", "2")
    assert stopped[0]["step"] == "vm.shutdown"
    assert ch.json("inspect", "c1")["status"]["state"] == "stopped"
    vm_dir = Path(info["paths"]["dir"])
    assert stat.S_IMODE((vm_dir / "vmm.log").stat().st_mode) == 0o600


@VMM("cloud-hypervisor", "kill")
def test_kill_rm_and_gc_leave_no_files_in_the_runtime_dir(ch):
    start(ch, "k1")
    start(ch, "k2")
    ch.ok("kill", "k1")
    assert ch.json("inspect", "k1")["status"]["state"] == "stopped"
    ch.ok("rm", "--force", "k2")
    ch.ok("rm", "k1")
    ch.ok("gc")
    run_dir = Path(ch.env["VMKIT_RUNTIME_DIR"])
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("switch")) == []


@VMM("cloud-hypervisor", "hotplug_disk", "disk_raw", "disk_qcow2", "counters")
def test_disk_unplug_is_pending_until_the_guest_acks_and_ids_stay_fresh(ch, tmp_path):
    raw = tmp_path / "d.raw"
    raw.write_bytes(b"\0" * (1 << 20))
    start(ch, "h1")
    added = json.loads(ch.ok("disk", "add", "h1", str(raw), "--json").stdout)
    assert added["id"] == "hd0"
    counters = json.loads(ch.ok("counters", "h1").stdout)
    assert "hd0" in counters
    # bug D: CH answers 204 but keeps the device until the (never booted) guest ejects it
    out = ch.ok("disk", "rm", "h1", "hd0").stdout
    assert "pending guest acknowledgement" in out
    assert "hd0" in vm_info(ch, "h1")["device_tree"]
    proc = fails(ch, "disk", "add", "h1", str(raw))  # CH still holds its lock on it
    assert "still attached as hd0 (removal pending guest acknowledgement)" in proc.stderr
    other = tmp_path / "e.raw"
    other.write_bytes(b"\0" * (1 << 20))
    again = json.loads(ch.ok("disk", "add", "h1", str(other), "--json").stdout)
    assert again["id"] == "hd1"  # hd0 is still CH's: "Invalid identifier as it is not unique"
    # bug H: a qcow2 overlay needs backing_files: true, else "Maximum disk nesting depth"
    base, overlay = tmp_path / "base.qcow2", tmp_path / "over.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "8M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay)],
        check=True,
    )
    ov = json.loads(ch.ok("disk", "add", "h1", str(overlay), "--json").stdout)
    disks = {d["id"]: d for d in vm_info(ch, "h1")["config"]["disks"]}
    assert disks[ov["id"]]["backing_files"] is True


@VMM("cloud-hypervisor", "disk_clone", "disk_qcow2")
def test_a_qcow2_clone_disk_overlay_is_opened_by_ch(ch, tmp_path):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "8M"], check=True)
    info = start(ch, "cl1", "--clone-disk", str(base))
    assert info["status"]["state"] == "running"
    (disk,) = vm_info(ch, "cl1")["config"]["disks"]
    assert disk["backing_files"] is True  # an overlay of base on this (ext4) filesystem


@VMM("cloud-hypervisor", "hotplug_share", "shares")
def test_share_hotplug_and_unplug(ch, tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    start(ch, "s1")
    added = json.loads(ch.ok("share", "add", "s1", str(share), "data", "--json").stdout)
    assert added["id"] == "hs0"
    assert [f["tag"] for f in vm_info(ch, "s1")["config"]["fs"]] == ["data"]
    out = ch.ok("share", "rm", "s1", "hs0").stdout
    assert "hs0" in out
    ch.ok("kill", "s1")
    ch.ok("gc")
    assert not Path(added["helper"]["socket"]).exists()


@VMM("cloud-hypervisor", "resize")
def test_resize_is_shown_and_a_pending_vcpu_removal_is_said_plainly(ch, tmp_path):
    start(ch, "r1", "-f", _yaml(ch, tmp_path, "max_cpus: 3\nmax_memory: 256M\n"))
    proc = fails(ch, "resize", "r1", "--memory", "192M")
    assert proc.returncode == 2 and "128 MiB blocks" in proc.stderr
    ch.ok("resize", "r1", "--cpus", "2", "--memory", "256M")
    (row,) = ch.json("ls")
    assert (row["cpus"], row["memory"]) == (2, 256 << 20)
    assert vm_info(ch, "r1")["config"]["cpus"]["boot_vcpus"] == 2
    assert ch.json("inspect", "r1")["runtime"]["resized"] == {"cpus": 2, "memory": 256 << 20}
    ch.ok("resize", "r1", "--cpus", "3")
    ch.ok("resize", "r1", "--cpus", "2")  # pending: the guest never releases the vCPU
    proc = fails(ch, "resize", "r1", "--cpus", "1")  # CH: 429 Too Many Requests
    assert "waiting for the guest to release vCPUs" in proc.stderr
    assert '["' not in proc.stderr


@VMM("cloud-hypervisor", "reboot")
def test_reboot_is_a_new_start_for_readiness(ch):
    start(ch, "rb1")
    assert ch.json("reboot", "rb1")["state"] == "running"
    assert vm_info(ch, "rb1")["state"] == "Running"


@VMM("cloud-hypervisor", "snapshot")
def test_snapshot_restores_into_several_copies_and_on_demand(ch):
    ch.use(KVMPVM)  # host-specific variant: see the module docstring
    start(ch, "sn1", "--new-disk", "8M")
    ch.ok("snapshot", "create", "sn1", "snap")
    copies = {
        "cp1": ch.json("restore", "snap", "--name", "cp1", "--no-wait"),
        "cp2": ch.json(
            "restore", "snap", "--name", "cp2", "--no-wait", "--memory-restore", "ondemand"
        ),
    }
    for name, st in copies.items():
        assert st["state"] == "running", name
        info = ch.json("inspect", name)
        assert vm_info(ch, name)["state"] == "Running"
        (disk,) = vm_info(ch, name)["config"]["disks"]
        assert disk["path"].startswith(info["paths"]["dir"])  # its own clone
        config = Path(info["paths"]["dir"]) / "restore" / "config.json"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert ch.json("inspect", "sn1")["status"]["state"] == "running"


def _seccomp_off_binary(tmp_path: Path) -> Path:
    """The kvmpvm variant with `--seccomp false`. This build's migration worker makes a
    syscall its own seccomp filter lacks (newfstatat, seen on this host; fsync upstream
    with qcow2), so a migration can only complete here with the filter off. vmkit never
    does that to users; the test does, to see a migration that finishes."""
    wrapper = tmp_path / "ch-seccomp-off"
    wrapper.write_text(f'#!/bin/sh\nexec {KVMPVM} --seccomp false "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@VMM("cloud-hypervisor", "migrate")
def test_migration_moves_disks_and_serial_only_once_the_target_runs(ch, tmp_path):
    ch.use(_seccomp_off_binary(tmp_path))
    src = start(ch, "m1", "--new-disk", "8M")
    src_dir = Path(src["paths"]["dir"])
    moved = ch.json("migrate", "m1", "--to", "m2")
    assert moved["state"] in ("running", "ready")
    target = ch.json("inspect", "m2")
    assert vm_info(ch, "m2")["state"] == "Running"
    (disk,) = vm_info(ch, "m2")["config"]["disks"]
    t_dir = Path(target["paths"]["dir"])
    assert (t_dir / Path(disk["path"]).name).exists()
    assert not any(src_dir.glob("disk*"))
    # bug G: the target writes the serial file the source's config named; it moved along
    pid = target["status"]["pid"]
    fds = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert str(t_dir / "serial.log") in fds
    assert ch.json("inspect", "m1")["status"]["state"] == "stopped"


@VMM("cloud-hypervisor", "migrate", "crash_detection")
def test_a_failed_migration_leaves_the_source_whole_and_startable(ch):
    """With the real seccomp filter this build's migration worker dies (bug B+E). vmkit must
    wait for the real outcome: never report success, never move the source's disks."""
    ch.use(KVMPVM)
    src = start(ch, "f1", "--new-disk", "8M")
    src_dir = Path(src["paths"]["dir"])
    disks = sorted(p.name for p in src_dir.glob("disk*"))
    proc = ch("migrate", "f1", "--to", "f2")
    if proc.returncode == 0:  # a CH whose worker survives: then the target must really run
        assert vm_info(ch, "f2")["state"] == "Running"
        return
    assert "Traceback" not in proc.stderr
    assert "migration of 'f1' to 'f2' failed" in proc.stderr
    assert sorted(p.name for p in src_dir.glob("disk*")) == disks
    assert "f2" not in [v["name"] for v in ch.json("ls")]
    status = ch.json("inspect", "f1")["status"]
    if status["state"] != "running":  # the source VMM died: shown failed, with CH's reason
        assert status["state"] == "failed"
        assert "VMM exited unexpectedly" in status["reason"]
        assert "seccomp violation" in status["reason"]  # what kills this build's worker
        ch.ok("start", "f1")  # it boots again from its intact disks
    assert vm_info(ch, "f1")["state"] == "Running"


@VMM("cloud-hypervisor", "migrate")
def test_qcow2_migration_is_refused_before_anything_starts(ch):
    ch.use(KVMPVM)
    start(ch, "q1", "--new-disk", "8M:qcow2")
    proc = fails(ch, "migrate", "q1", "--to", "q2")
    assert "disks[0] is qcow2" in proc.stderr
    assert [v["name"] for v in ch.json("ls")] == ["q1"]
    assert vm_info(ch, "q1")["state"] == "Running"


def test_bad_input_is_refused_with_the_field_and_no_traceback(ch, tmp_path):
    # no hugetlbfs on the CI machine: refused before a VMM starts, not at vm.boot
    proc = fails(ch, "run", "hp", *ARGS, "-f", _yaml(ch, tmp_path, "hugepages: true\n"))
    assert proc.returncode == 2 and "hugepages" in proc.stderr
    assert ch.json("ls") == []
    start(ch, "b1")
    proc = fails(ch, "resize", "b1", "--cpus", "4")
    assert proc.returncode == 2 and "cpus 4" in proc.stderr
    proc = fails(ch, "disk", "add", "b1", str(tmp_path / "missing.raw"))
    assert proc.returncode == 2
    proc = fails(ch, "disk", "rm", "b1", "hd9")
    assert proc.returncode == 2
    proc = fails(ch, "migrate", "b1", "--to", "b1")
    assert proc.returncode == 2
    # CH's own refusal (kernel does not fit in 32 MiB): its cause chain, not its JSON array
    proc = fails(ch, "run", "tiny", "--driver", "cloud-hypervisor", "--accel", "kvm", "-m", "32M")
    assert "Cannot load the kernel into memory" in proc.stderr
    assert '["Error from API"' not in proc.stderr


def _yaml(cli, tmp_path: Path, text: str) -> str:
    """A spec file booting the tiny guest, plus `text`."""
    path = tmp_path / "spec.yaml"
    boot = {"kind": "linux", "kernel": str(cli.guest.vmlinux), "initrd": str(cli.guest.initrd)}
    path.write_text(f"boot: {json.dumps(boot)}\n{text}")
    return str(path)


def test_the_vmm_vmkit_launches_is_the_binary_named(ch):
    """The tier means something only if vmkit really runs that binary."""
    info = start(ch, "n1")
    assert info["runtime"]["argv"][0] == str(UPSTREAM)
    exe = os.readlink(f"/proc/{info['status']['pid']}/exe")
    assert Path(exe).resolve() == UPSTREAM.resolve()


@pytest.fixture
def netns():
    """A fresh network namespace (root only), removed afterwards with its TAPs."""
    import uuid

    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.skip("TAPs and network namespaces need root and /dev/net/tun")
    ns = f"vkv-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    yield ns
    subprocess.run(["ip", "netns", "del", ns], check=False)


def _taps_held(pid: int) -> set[str]:
    """Interfaces of the TAP fds process `pid` holds (the kernel's fdinfo `iff:` line)."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "/dev/net/tun":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        out |= {line.split()[1] for line in info.splitlines() if line.startswith("iff:")}
    return out


def _host_has_link(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@VMM("cloud-hypervisor", "net_tap", "hotplug_net", "snapshot")
def test_taps_in_a_netns_hotplug_and_restore_as_fds(ch, netns):
    """Bug F: restored by name, CH would open a new TAP in the host namespace. vmkit passes
    the netns TAP's fd (vm.restore net_fds) as it does for vm.add-net."""
    ch.use(KVMPVM)
    tap, hot = f"t{netns[4:]}", f"h{netns[4:]}"
    subprocess.run(["ip", "-n", netns, "tuntap", "add", "dev", hot, "mode", "tap"], check=True)
    info = start(ch, "n1", "--net", f"tap:{tap}@{netns}")
    assert _taps_held(info["status"]["pid"]) == {tap}
    added = json.loads(
        ch.ok("net", "add", "n1", "--mode", "tap", "--tap", hot, "--netns", netns, "--json").stdout
    )
    assert _taps_held(info["status"]["pid"]) == {tap, hot}
    out = ch.ok("net", "rm", "n1", added["id"]).stdout
    assert "pending guest acknowledgement" in out
    assert added["id"] in vm_info(ch, "n1")["device_tree"]
    ch.ok("kill", "n1")
    ch.ok("start", "n1")  # a fresh VMM: nothing hot-plugged, so it can be snapshot
    ch.ok("snapshot", "create", "n1", "ns")
    ch.ok("kill", "n1")  # a single-queue TAP has one owner
    restored = ch.json("restore", "ns", "--name", "n2", "--no-wait")
    assert restored["state"] == "running"
    assert _taps_held(restored["pid"]) == {tap}
    assert not _host_has_link(tap)


@pytest.mark.access_path("ch-hybrid-vsock", "vmm")
def test_vsock_cid_gives_a_hybrid_vsock_socket_the_ssh_path_uses(ch, tmp_path):
    """The real VMM binds the hybrid vsock socket where vmkit recorded it and takes the
    `CONNECT 22` handshake; no guest runs here to accept it, so `exec` says that nothing
    answered over vsock (not a socket or proxy error), and the socket goes with the VM."""
    spec = tmp_path / "v.json"
    spec.write_text(json.dumps({"name": "vs1", "driver": "cloud-hypervisor", "memory": "128M",
                                "accelerator": "kvm", "vsock_cid": 5}))  # fmt: skip
    ch.ok("create", "-f", str(spec))
    ch.ok("start", "vs1")
    sock = ch.json("inspect", "vs1")["runtime"]["sockets"]["vsock"]
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert vm_info(ch, "vs1")["config"]["vsock"]["socket"] == sock
    assert vm_info(ch, "vs1")["config"]["vsock"]["cid"] == 5
    ch.env["VMKIT_SSH_WAIT"] = "2"
    proc = fails(ch, "exec", "vs1", "--", "true")
    assert proc.returncode == 255 and "no SSH server answered over vsock" in proc.stderr
    assert f"{sock} port 22" in proc.stderr
    ch.ok("kill", "vs1")
    assert not os.path.exists(sock)
