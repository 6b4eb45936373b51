"""Snapshot/restore of the tiny guest: restore-to-ready vs cold boot-to-ready, side by side.

A (cold): `vmkit run cold-NN --json`, spawn -> exit with state ready.
B (restore): `vmkit restore warm --name copy-NN --json`, spawn -> exit with state ready
(the guest re-announces readiness through its control port), from a snapshot of a ready
256 MiB guest. Interleaved A B A B after one untimed pair.

Also: snapshot time and size (state file, and what gzip -1 / lzma would save), and the memory
of N restored copies running at once (RSS/PSS/USS of each QEMU).

    python bench/snapshot.py --runs 7 --copies 4 --json bench/results/snapshot.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import psutil
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

MIB = 1 << 20
TARGET_SPEEDUP = 3.0


def timed_json(sb: Sandbox, *args: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = sb.vmkit_json(*args)
    return time.perf_counter() - t0, out


def compression(path: Path) -> dict[str, float]:
    """Size and time of gzip -1 over the state file (a cheap compressor vmkit could pipe to)."""
    data = path.read_bytes()
    t0 = time.perf_counter()
    packed = zlib.compress(data, 1)
    return {
        "raw_mib": len(data) / MIB,
        "gzip1_mib": len(packed) / MIB,
        "gzip1_seconds": time.perf_counter() - t0,
    }


def memory_of_copies(sb: Sandbox, n: int) -> list[dict[str, float]]:
    rows = []
    for i in range(n):
        sb.vmkit_json("restore", "warm", "--name", f"mem-{i}")
    time.sleep(2)
    for i in range(n):
        pid = sb.vmkit_json("inspect", f"mem-{i}")["status"]["pid"]
        full = psutil.Process(pid).memory_full_info()
        rows.append({"rss": full.rss / MIB, "pss": full.pss / MIB, "uss": full.uss / MIB})
    for i in range(n):
        sb.vmkit_cmd("rm", "--force", f"mem-{i}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=7, help="timed pairs (default 7)")
    ap.add_argument("--copies", type=int, default=4, help="restored copies for memory (4)")
    ap.add_argument("--json", metavar="FILE", help="write samples and summary as JSON")
    ap.add_argument("--vmkit", metavar="PATH", help="vmkit executable (default: beside python)")
    ap.add_argument("--driver", default="auto", help="qemu here; cloud-hypervisor on KVM hosts")
    args = ap.parse_args()
    install_signal_handlers()
    vmkit = vmkit_executable(args.vmkit)
    cold: list[float] = []
    restore: list[float] = []
    snap_s: list[float] = []
    with Sandbox(vmkit) as sb:
        env = environment(vmkit, sb)
        print_header(env)
        sb.vmkit_json("run", "src", "--driver", args.driver)
        time.sleep(1)
        for i in range(3):
            seconds, _ = timed_json(sb, "snapshot", "create", "src", f"probe-{i}")
            snap_s.append(seconds)
        seconds, snap = timed_json(sb, "snapshot", "create", "src", "warm")
        snap_s.append(seconds)
        sb.vmkit_cmd("rm", "--force", "src")
        state = Path(snap["path"]) / "state.qemu"
        comp = compression(state) if state.exists() else {}  # QEMU's single state file
        for i in range(args.runs + 1):
            c, st = timed_json(sb, "run", f"cold-{i:02d}", "--driver", args.driver)
            r, rt = timed_json(sb, "restore", "warm", "--name", f"copy-{i:02d}")
            if st["state"] != "ready" or rt["state"] != "ready":
                raise BenchError(f"not ready: {st['state']} / {rt['state']}")
            sb.vmkit_cmd("rm", "--force", f"cold-{i:02d}", f"copy-{i:02d}")
            tag = "warm-up" if i == 0 else f"run {i}/{args.runs}"
            print(f"{tag:>10}: cold {c * MS:7.0f} ms   restore {r * MS:7.0f} ms", flush=True)
            if i:
                cold.append(c)
                restore.append(r)
        mem = memory_of_copies(sb, args.copies)
    env["loadavg_end"] = os.getloadavg()

    sc, sr, ss = summarize(cold), summarize(restore), summarize(snap_s)
    print()
    print(
        table(
            [
                [
                    label,
                    s["n"],
                    f"{s['median'] * MS:.0f}",
                    f"{s['min'] * MS:.0f}",
                    f"{s['max'] * MS:.0f}",
                    f"{s['stdev'] * MS:.0f}",
                ]
                for label, s in (
                    ("cold boot to ready (vmkit run)", sc),
                    ("restore to ready (vmkit restore)", sr),
                    ("snapshot create (vmkit snapshot create)", ss),
                )
            ],
            ["ms", "n", "median", "min", "max", "stdev"],
        )
    )
    speedup = sc["median"] / sr["median"]
    print(
        f"\nrestore is {speedup:.1f}x faster than a cold boot (target >= {TARGET_SPEEDUP}x): "
        f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT MET'}"
    )
    if comp:
        print(
            f"snapshot of a 256 MiB guest: state file {comp['raw_mib']:.1f} MiB "
            f"(zero pages are not stored); gzip -1 would make it {comp['gzip1_mib']:.1f} MiB "
            f"in {comp['gzip1_seconds'] * MS:.0f} ms"
        )
    print()
    print(
        table(
            [
                [f"copy {i}", f"{m['rss']:.1f}", f"{m['pss']:.1f}", f"{m['uss']:.1f}"]
                for i, m in enumerate(mem)
            ]
            + [
                [
                    "total",
                    f"{sum(m['rss'] for m in mem):.1f}",
                    f"{sum(m['pss'] for m in mem):.1f}",
                    f"{sum(m['uss'] for m in mem):.1f}",
                ]
            ],
            ["QEMU MiB", "RSS", "PSS", "USS"],
        )
    )
    write_json(
        args.json,
        {
            "benchmark": "snapshot",
            "environment": env,
            "samples_seconds": {"cold": cold, "restore": restore, "snapshot": snap_s},
            "summary": {"cold": sc, "restore": sr, "snapshot": ss},
            "speedup": speedup,
            "snapshot": {"record": snap, "compression": comp},
            "memory_of_copies_mib": mem,
        },
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
