#!/usr/bin/env python3
"""Generate docs/capabilities.md from the drivers' declared Capabilities and the tests
that exercise each one (pytest `capability` markers), so the docs cannot claim more
than the tests show. `--check` exits 1 when the committed file is out of date.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "capabilities.md"


def collect() -> dict[str, dict[str, list[str]]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "capmap.json"
        env = {**os.environ, "VMKIT_CAPMAP": str(out)}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", "tests"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if not out.exists():
            raise SystemExit(f"test collection failed:\n{proc.stdout}\n{proc.stderr}")
        data: dict[str, dict[str, list[str]]] = json.loads(out.read_text())
        return data


# Guest-access transports (access/transport.py, best first: vsock > serial > network): the
# path, its label, and what has to listen in the guest. Each path's level is the best its
# tests (marked `access_path(path, level)`) show; a path without tests is "not implemented".
ACCESS_PATHS = (
    ("ch-hybrid-vsock", "Cloud Hypervisor hybrid vsock (`vsock_cid`; Unix socket + `CONNECT 22`)",
     "an SSH server on vsock port 22", ""),
    ("vfkit-vsock", "vfkit `virtio-vsock,port=22,socketURL=…,connect` (`vsock_cid: 3`)",
     "an SSH server on vsock port 22",
     ", not yet run on macOS (vfkit's own parser and the vfkit test double)"),
    ("krunkit-vsock", "krunkit (>= 1.2) the same `virtio-vsock …,connect` device (`vsock_cid: 3`)",
     "an SSH server on vsock port 22",
     ", not yet run on macOS (krunkit's grammar as modelled and the test double)"),
    ("qemu-vhost-vsock", "QEMU `-device vhost-vsock-pci,guest-cid=N` (`vsock_cid`, host needs "
     "/dev/vhost-vsock; a restored copy gets a CID of its own), AF_VSOCK to CID:22",
     "an SSH server on vsock port 22",
     ": the real QEMU takes vmkit's argv and fails only opening /dev/vhost-vsock, which the "
     "CI host lacks; the proxy's AF_VSOCK connect is the host kernel's; no guest reached"),
    ("qemu-serial", "QEMU virtio-serial port `org.vmkit.ssh` (works with `--net none`)",
     "the tiny guest's /init bridges it to dropbear", ""),
    ("network", "a published port to guest 22 (NAT), or the guest's address on a TAP",
     "an SSH server on TCP port 22", ""),
)  # fmt: skip
LEVELS = (
    ("e2e", "**supported**"),
    ("vmm", "VMM-tested, no guest booted"),
    ("contract", "contract-tested"),
)


def access_rows(capmap: dict[str, dict[str, list[str]]]) -> list[str]:
    tests = capmap.get("@access", {})
    lines = [
        "## Guest access transports",
        "",
        "Which path `vmkit ssh/exec/cp` takes, best first (vsock > serial > network; "
        "`--transport` picks one). Each vsock path needs the guest to serve SSH on vsock port "
        "22: systemd >= 256 does by itself when sshd is installed (systemd-ssh-generator binds "
        "a socket-activated sshd to AF_VSOCK port 22 in a VM; e.g. Debian 13's systemd 257), "
        "Debian 12 (systemd 252) does not, and neither does vmkit's tiny guest (a vsock "
        "listener from Debian's packages, socat, would grow its initramfs from 4.08 to 7.14 MB: "
        "docs/benchmarks.md). Without `vsock_cid` no vsock device is added.",
        "",
        "| Path | Guest side | Level | Tests |",
        "|---|---|---|---|",
    ]
    for key, label, guest, note in ACCESS_PATHS:
        level, ids = "not implemented", []
        for tag, text in LEVELS:
            ids = sorted(tests.get(f"{key} {tag}", []))
            if ids:
                level = text + (note if tag == "contract" else "")
                break
        names = ", ".join(f"`{i.rsplit('::', 1)[-1]}`" for i in ids) or "-"
        lines.append(f"| {label} | {guest} | {level} | {names} |")
    return [*lines, ""]


def render(capmap: dict[str, dict[str, list[str]]]) -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from vmkit.drivers import get_driver, names
    from vmkit.drivers.base import CAPABILITY_TEXT, Capabilities

    declared: dict[str, Capabilities | None] = {}
    not_run_on: dict[str, str | None] = {}
    vmm_level: dict[str, str | None] = {}
    DRIVERS = names()
    for name in DRIVERS:
        driver = get_driver(name)
        declared[name] = driver.capabilities  # features + abilities its Control implements
        not_run_on[name] = driver.not_yet_run_on
        vmm_level[name] = driver.vmm_tested

    def cell(driver: str, cap: str) -> str:
        caps = declared[driver]
        if caps is None:
            return "not implemented"
        if not getattr(caps, cap):
            return "no"
        tests = capmap.get(driver, {}).get(cap, [])
        vmm_tests = capmap.get(f"{driver}@vmm", {}).get(cap, [])
        if vmm_tests and vmm_level[driver] and not_run_on[driver]:
            n = len(vmm_tests)
            return f"{vmm_level[driver]} ({n} test{'s' * (n > 1)})"
        if not tests:
            return "declared, untested"
        if not_run_on[driver]:
            n = len(tests)
            return f"contract-tested, not yet run on {not_run_on[driver]} ({n} test{'s' * (n > 1)})"
        return f"**supported** ({len(tests)} e2e)"

    lines = [
        "# Capabilities",
        "",
        "Generated by `scripts/gen_capabilities.py` from each driver's declared `Capabilities`",
        "and the tests marked `@pytest.mark.capability(driver, ...)`; do not edit by hand.",
        "**supported** means a test boots a real guest on that hypervisor and exercises it.",
        "`declared, untested` is not supported. `not implemented`: the driver does not exist yet.",
        "`contract-tested, not yet run on X`: checked only against the VMM's documented interface",
        "and a named test double (its hypervisor cannot run where CI runs); not supported until a",
        "real run on X passes.",
        "`VMM-tested on real ...; guest not booted`: tests start the hypervisor's real binary and",
        "drive that capability through vmkit's CLI and the VMM's real API (marked",
        "`vmm_capability`), on a host whose KVM cannot run a guest: the VMM's side is real, the",
        "guest's is not; the contract tests (a named double standing in for a booted guest and",
        "for faults) still apply there.",
        "",
        "What runs for real toward the Mac drivers: the arm64 tiny guest they boot",
        "(`vmkit guest build --arch arm64`, by apt or, as on a Mac, straight from the Debian",
        "archive: byte-identical, `tests/e2e/test_guest_sources.py`), and the raw `Image` the",
        "vfkit driver unpacks from",
        "a compressed or EFI zboot kernel with its cmdline, boot to readiness and power off on",
        "the button under `qemu-system-aarch64` (TCG) in `tests/e2e/test_arm64_guest.py`; the",
        "switch process serves vfkit-style ports (`tests/contract/test_vfkit_switch.py`). None",
        "of that is vfkit itself, so none of it turns a vfkit cell into **supported**.",
        "vfkit's own parsing code (`pkg/config`, `pkg/cmdline`, compiled as",
        "`../shared/tools/vfkit-parse`) reads every vfkit argv the contract tests build and must",
        "re-emit the same devices (`tests/contract/test_vfkit_oracle.py`): vfkit's parser, not",
        "Virtualization.framework.",
        "",
        "| Capability | " + " | ".join(DRIVERS) + " |",
        "|---|" + "---|" * len(DRIVERS),
    ]
    for cap in Capabilities.names():
        row = [CAPABILITY_TEXT.get(cap, cap)] + [cell(d, cap) for d in DRIVERS]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", *access_rows(capmap)]
    lines += ["## Tests behind each supported capability", ""]
    for driver in DRIVERS:
        for key, label in ((driver, driver), (f"{driver}@vmm", f"{driver} (real VMM)")):
            for cap, tests in sorted(capmap.get(key, {}).items()):
                lines.append(f"- {label} / {cap}: " + ", ".join(f"`{t}`" for t in sorted(tests)))
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if docs/capabilities.md is stale"
    )
    args = parser.parse_args()
    text = render(collect())
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(
                "docs/capabilities.md is out of date: run scripts/gen_capabilities.py",
                file=sys.stderr,
            )
            raise SystemExit(1)
        print("docs/capabilities.md is current")
        return
    DOC.write_text(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
