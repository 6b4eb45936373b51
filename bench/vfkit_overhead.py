#!/usr/bin/env python3
"""vmkit's own cost on the vfkit driver: `vmkit run --driver vfkit` start-to-ready against
the same vfkit argv started directly (Popen + watching serial.log for the readiness line).

On Linux the VMM is the vfkit TEST DOUBLE (tests/contract/vfkit_double.py), which answers at
once, so the difference is vmkit's overhead alone: interpreter, imports, create, argv, launch,
control-socket wait and readiness polling. On a Mac pass `--real` with a guest
(`--kernel/--initrd`) to measure real vfkit boots the same way (target: <= 5% overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MS, Sandbox, summarize, table, vmkit_executable

DOUBLE = Path(__file__).resolve().parent.parent / "tests" / "contract" / "vfkit_double.py"


def fake_vfkit(sb: Sandbox) -> None:
    bin_dir = sb.root / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "vfkit"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} {DOUBLE} "$@"\n')
    shim.chmod(0o755)
    sb.env["PATH"] = f"{bin_dir}{os.pathsep}{sb.env['PATH']}"


def run_vmkit(sb: Sandbox, name: str, boot: list[str]) -> float:
    t0 = time.perf_counter()
    st = sb.vmkit_json("run", name, "--driver", "vfkit", "--timeout", "120", *boot)
    elapsed = time.perf_counter() - t0
    assert st["state"] == "ready", st
    sb.vmkit_cmd("rm", "--force", name)
    return elapsed


def run_raw(sb: Sandbox, argv: list[str], serial: Path, marker: str = "VMKIT_READY") -> float:
    serial.unlink(missing_ok=True)
    for sock in sb.rundir.iterdir():
        sock.unlink()
    t0 = time.perf_counter()
    proc = sb.track(
        subprocess.Popen(argv, env=sb.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    )
    while True:
        if serial.exists() and marker.encode() in serial.read_bytes():
            elapsed = time.perf_counter() - t0
            break
        if proc.poll() is not None:
            raise RuntimeError(f"raw vfkit exited {proc.returncode} before ready")
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--real", action="store_true", help="use the real vfkit on PATH (macOS)")
    ap.add_argument("--kernel", help="guest kernel (with --real; default: the tiny guest)")
    ap.add_argument("--initrd", help="guest initramfs (with --real; default: the tiny guest)")
    ap.add_argument("--json", dest="json_out", help="write samples and summary here")
    args = ap.parse_args()
    vmkit = vmkit_executable()
    with Sandbox(vmkit, prefix="vk-bench-") as sb:
        if args.real:
            if not shutil.which("vfkit"):
                ap.error("--real needs vfkit on PATH (`brew install vfkit`)")
            kernel, initrd = args.kernel, args.initrd
            if not (kernel and initrd):
                from vmkit.guest.build import find_built

                built = find_built()  # the arm64 tiny guest copied from a Debian build
                if built is None:
                    ap.error(
                        "--real needs --kernel/--initrd, or the tiny guest: `vmkit guest build`"
                    )
                kernel, initrd = str(built.kernel), str(built.initrd)
        else:
            fake_vfkit(sb)
            kernel, initrd = str(sb.root / "vmlinux"), str(sb.root / "initrd")
            Path(kernel).write_bytes(b"\0" * 512)
            Path(initrd).write_bytes(b"\0" * 512)
        boot = ["--kernel", kernel, "--initrd", initrd, "--cmdline", "console=hvc0 quiet"]
        sb.vmkit_cmd("create", "raw-ref", "--driver", "vfkit", *boot)
        plan = sb.vmkit_json("start", "raw-ref", "--dry-run")
        serial = sb.home / "vms" / "raw-ref" / "serial.log"
        a, b = [], []
        for i in range(args.runs):  # interleaved, so drift hits both alike
            a.append(run_vmkit(sb, f"b{i:02d}", boot))
            b.append(run_raw(sb, plan["argv"], serial))
        sa, sb_ = summarize([x * MS for x in a]), summarize([x * MS for x in b])
        vmm = "vfkit" if args.real else "vfkit test double"
        print(
            table(
                [
                    [
                        f"vmkit run --driver vfkit ({vmm})",
                        *(f"{sa[k]:.0f}" for k in ("median", "min", "max")),
                    ],
                    [
                        f"same argv, Popen directly ({vmm})",
                        *(f"{sb_[k]:.0f}" for k in ("median", "min", "max")),
                    ],
                    ["vmkit overhead (median)", f"{sa['median'] - sb_['median']:.0f}", "", ""],
                ],
                ["start-to-ready, ms", "median", "min", "max"],
            )
        )
        if args.json_out:
            Path(args.json_out).write_text(
                json.dumps({"vmkit_ms": sa, "raw_ms": sb_, "vmm": vmm, "runs": args.runs}, indent=2)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
