"""Bad input gets exit code 2, a message naming the problem, and nothing left behind."""

from __future__ import annotations

import pytest

from vmkit.hostinfo import kvm_state


def _vm_dirs(cli):
    vms = cli.home / "vms"
    return sorted(p.name for p in vms.iterdir()) if vms.exists() else []


def test_missing_kernel_is_exit_2_and_creates_nothing(cli, tmp_path):
    proc = cli("run", "nok", "--kernel", str(tmp_path / "nope"), "--accel", "tcg")
    assert proc.returncode == 2
    assert "boot.kernel" in proc.stderr and "does not exist" in proc.stderr
    assert _vm_dirs(cli) == []


def test_invalid_memory_is_exit_2_naming_field_and_value(cli, guest):
    proc = cli("create", "mem", "--memory", "12XB")
    assert proc.returncode == 2
    assert "memory: '12XB' is not a size" in proc.stderr
    assert _vm_dirs(cli) == []


def test_invalid_name_is_exit_2(cli, guest):
    proc = cli("create", "../evil")
    assert proc.returncode == 2
    assert "not a valid name" in proc.stderr
    assert _vm_dirs(cli) == []
    assert not (cli.home.parent / "evil").exists()


def test_duplicate_name_is_exit_2_and_keeps_the_original(cli, guest):
    cli.ok("create", "dup", "--cpus", "1")
    before = (cli.home / "vms" / "dup" / "machine.json").read_bytes()
    proc = cli("create", "dup", "--cpus", "2")
    assert proc.returncode == 2
    assert "already exists" in proc.stderr
    assert (cli.home / "vms" / "dup" / "machine.json").read_bytes() == before
    assert _vm_dirs(cli) == ["dup"]


def test_unknown_vm_is_exit_2(cli):
    proc = cli("stop", "ghost")
    assert proc.returncode == 2
    assert "no VM named 'ghost'" in proc.stderr


def test_bad_spec_file_reports_every_field(cli, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: Bad\ncpus: 0\nmemory: lots\nboot: {kernel: missing}\ncolour: blue\n")
    proc = cli("create", "-f", str(spec))
    assert proc.returncode == 2
    for needle in ("name:", "cpus:", "memory:", "colour: unknown field"):
        assert needle in proc.stderr
    assert _vm_dirs(cli) == []


def test_dry_run_prints_argv_and_starts_nothing(cli, guest):
    cli.ok("create", "dry", "--accel", "tcg")
    out = cli.ok("start", "dry", "--dry-run").stdout
    assert out.startswith("qemu-system-") or "/qemu-system-" in out.split()[0]
    assert "-accel tcg" in out and "-nodefaults" in out
    assert cli.json("inspect", "dry")["status"]["state"] == "created"


@pytest.mark.skipif(
    kvm_state().usable, reason="KVM works on this host; the hint is for unusable KVM"
)
def test_unusable_kvm_fails_with_a_hint_to_use_tcg(cli, guest):
    proc = cli("run", "kvm", "--accel", "kvm", "--timeout", "20")
    assert proc.returncode == 1
    assert "--accel tcg" in proc.stderr
    status = cli.json("inspect", "kvm")["status"]
    assert status["state"] == "failed"
    assert "--accel tcg" in (status["hint"] or "")
