"""Guest-to-guest ping RTT through vmkit's switch versus QEMU's own `-netdev socket` hub.

A: `vmkit run` two tiny guests on `--net switch:lan` with static IPs; guest a pings b.
B: the same two QEMU argvs (`vmkit start --dry-run`), with the `-netdev dgram` port swapped
for a `-netdev socket,mcast=` hub, started directly; guest a pings b the same way.
Under TCG the guests' own CPU time dominates; the question is whether the switch adds to it.

    python bench/switch_guests.py --count 30 --json bench/results/switch_guests.json
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import Sandbox, vmkit_executable, write_json

RTT_RE = re.compile(r"round-trip min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms")
LOSS_RE = re.compile(r"(\d+)% packet loss")


def wait_for(path: Path, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        data = path.read_text(errors="replace") if path.exists() else ""
        if text in data:
            return data
        if time.monotonic() > deadline:
            raise SystemExit(f"timeout waiting for {text!r} in {path}:\n{data[-1500:]}")
        time.sleep(0.1)


def ping_via_console(console: Path, log: Path, target: str, count: int) -> dict[str, float]:
    start = log.stat().st_size if log.exists() else 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(console))
        s.sendall(f"ping -c {count} -i 0.2 {target}\r".encode())
        s.setblocking(False)
        deadline = time.monotonic() + count * 2 + 30
        while True:
            try:  # drain the console: QEMU stalls the serial port when nobody reads it
                while s.recv(65536):
                    pass
            except BlockingIOError:
                pass
            data = log.read_text(errors="replace")[start:]
            m = RTT_RE.search(data)
            if m:
                loss = LOSS_RE.search(data)
                return {
                    "min_ms": float(m.group(1)),
                    "avg_ms": float(m.group(2)),
                    "max_ms": float(m.group(3)),
                    "loss_pct": float(loss.group(1)) if loss else -1.0,
                }
            if time.monotonic() > deadline:
                raise SystemExit(f"no ping summary:\n{data[-1500:]}")
            time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--count", type=int, default=30)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    vmkit = vmkit_executable(None)
    out: dict[str, Any] = {}
    with Sandbox(vmkit) as sb:
        ips = {"a": "10.10.0.2/24", "b": "10.10.0.3/24"}
        for name, ip in ips.items():
            sb.vmkit_json("run", name, "--net", "switch:lan", "--ip", ip)
        a = sb.vmkit_json("inspect", "a")
        out["vmkit switch"] = ping_via_console(
            Path(a["runtime"]["sockets"]["console"]),
            Path(a["paths"]["serial_log"]),
            "10.10.0.3",
            args.count,
        )
        plans = {n: sb.vmkit_json("start", n, "--dry-run") for n in ips}
        sb.vmkit_cmd("kill", "a", "b")
        procs = []
        logs = {}
        for n, plan in plans.items():
            argv = list(plan["argv"])
            i = next(k for k, v in enumerate(argv) if v.startswith("dgram,"))
            argv[i] = "socket,id=net0,mcast=230.0.0.1:31337"
            logs[n] = Path(sb.vmkit_json("inspect", n)["paths"]["serial_log"])
            logs[n].unlink(missing_ok=True)
            for sock in plan["sockets"].values():
                Path(sock).unlink(missing_ok=True)
            procs.append(
                sb.track(
                    subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            )
        for n in plans:
            wait_for(logs[n], "VMKIT_READY")
        out["qemu -netdev socket hub"] = ping_via_console(
            Path(plans["a"]["sockets"]["console"]), logs["a"], "10.10.0.3", args.count
        )
        for p in procs:
            p.kill()
    for k, v in out.items():
        print(
            f"{k:26s} rtt min/avg/max {v['min_ms']:.2f}/{v['avg_ms']:.2f}/{v['max_ms']:.2f} ms, "
            f"loss {v['loss_pct']:.0f}%"
        )
    write_json(args.json, {"benchmark": "switch_guests", "count": args.count, "results": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
