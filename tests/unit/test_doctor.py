"""`vmkit doctor --json` on this host: the facts the README points users at."""

from __future__ import annotations

import os
import shutil

from vmkit.hostinfo import machine_arch


def test_doctor_reports_firmware_emulation_and_the_tiny_guest(cli) -> None:
    facts = cli.json("doctor")
    assert facts["arch"] == machine_arch()
    other = "aarch64" if machine_arch() == "x86_64" else "x86_64"
    assert (other in facts["qemu_emulates"]) == bool(shutil.which(f"qemu-system-{other}"))
    if facts["uefi_firmware"] is not None:
        assert facts["uefi_firmware"].endswith(".fd")
    assert set(facts) >= {"kvm_usable", "accelerator_auto", "qemu", "tiny_guest", "runtime_dir"}
    assert facts["vhost_vsock"] == os.path.exists("/dev/vhost-vsock")
    text = cli.ok("doctor").stdout
    assert "qemu_emulates:" in text and "[" not in text.split("qemu_emulates:")[1].split("\n")[0]
