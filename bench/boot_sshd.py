"""Tiny-guest boot with and without its SSH server, the same QEMU argv launched directly.

A = the tiny guest of a vmkit before issue 14 (`--kernel`/`--initrd` of a built guest
without dropbear, given as --old-guest DIR); B = the current tiny guest with dropbear and the
VM's key archive appended (its `vmkit start --dry-run` argv, which writes that initramfs).
Each boot is timed from Popen to `VMKIT_READY` + newline in the serial log (bench/boot.py's
RawBoot), interleaved A B A B so drift of a shared machine hits both alike.

    python bench/boot_sshd.py --old-guest ~/.cache/vmkit/guest/6.1.0-57-amd64-amd64-1bf91205db
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import (
    MS,
    BenchError,
    Sandbox,
    environment,
    install_signal_handlers,
    print_header,
    summarize,
    table,
    vmkit_executable,
    write_json,
)
from boot import RawBoot


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-guest", required=True, type=Path, help="a guest dir without sshd")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    install_signal_handlers()
    vmkit = vmkit_executable(None)
    old = args.old_guest
    with Sandbox(vmkit, prefix="vmkit-bench-sshd-") as sb:
        env = environment(vmkit, sb)
        print_header(env)
        sb.vmkit_cmd("create", "old", "--kernel", str(old / "vmlinux"), "--initrd",
                     str(old / "initramfs.cpio.gz"), "--cmdline", "quiet")  # fmt: skip
        sb.vmkit_cmd("create", "new")
        boots = {n: RawBoot(sb, sb.vmkit_json("start", n, "--dry-run"), args.timeout)
                 for n in ("old", "new")}  # fmt: skip
        samples: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(args.runs + 1):
            for name, boot in boots.items():
                s = boot.run()
                if i:
                    samples[name].append(s)
            if i:
                print(f"  run {i}/{args.runs}: without sshd {samples['old'][-1] * MS:.0f} ms, "
                      f"with {samples['new'][-1] * MS:.0f} ms", flush=True)  # fmt: skip
        rows = []
        for name, label in (("old", "tiny guest without sshd"), ("new", "with dropbear + keys")):
            s = summarize([x * MS for x in samples[name]])
            rows.append([label, s["n"], f"{s['median']:.0f}", f"{s['min']:.0f}",
                         f"{s['max']:.0f}", f"{s['stdev']:.0f}"])  # fmt: skip
        print(table(rows, ["ms, Popen -> ready", "n", "median", "min", "max", "stdev"]))
        diffs = [b - a for a, b in zip(samples["old"], samples["new"], strict=True)]
        print(
            f"paired difference (with - without), median: {summarize(diffs)['median'] * MS:+.0f} ms"
        )
        write_json(args.json, {"env": env, "samples": samples})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
