"""Throughput of vmkit's userspace L2 switch process alone, host-only, no VMs.

Two ports (Unix datagram sockets bound like QEMU's `-netdev dgram` would) join a switch
started exactly as vmkit starts it (`python -m vmkit.net.switch`). Port B sends one frame so
its MAC is learned; then port A sends `--frames` unicast frames of `--size` bytes to B's MAC
as fast as the socket buffers take them, and B counts what arrives. The rate is frames
delivered per second of the switch's forwarding (first to last frame at B).

    python bench/switch.py --frames 200000 --size 64 --json bench/results/switch.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import write_json

TARGET_FPS = 200_000


def frame(dst: bytes, src: bytes, size: int) -> bytes:
    return dst + src + b"\x08\x00" + bytes(max(0, size - 14))


def run(frames: int, size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vksw") as tmp:
        d = Path(tmp)
        leases = d / "leases"
        leases.mkdir()
        a_path, b_path, sw_path = d / "a", d / "b", d / "sock"
        (leases / "bench").write_text(json.dumps({"ports": [str(a_path), str(b_path)]}))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vmkit.net.switch",
                "--socket",
                str(sw_path),
                "--stats",
                str(d / "stats.json"),
                "--leases",
                str(leases),
            ]
        )
        try:
            while not sw_path.exists():
                time.sleep(0.01)
            a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            a.bind(str(a_path))
            b.bind(str(b_path))
            for s in (a, b):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            mac_a, mac_b = b"\x52\x54\x00\x00\x00\x0a", b"\x52\x54\x00\x00\x00\x0b"
            b.sendto(frame(b"\xff" * 6, mac_b, size), str(sw_path))  # B's MAC learned
            a.recv(65536)  # the flooded broadcast reaches A
            got = 0
            first = last = 0.0
            b.settimeout(2.0)

            def receive() -> None:
                nonlocal got, first, last
                while got < frames:
                    try:
                        b.recv(65536)
                    except TimeoutError:
                        return
                    last = time.perf_counter()
                    if got == 0:
                        first = last
                    got += 1

            t = threading.Thread(target=receive)
            t.start()
            payload = frame(mac_b, mac_a, size)
            t0 = time.perf_counter()
            for _ in range(frames):
                while True:
                    try:
                        a.sendto(payload, str(sw_path))
                        break
                    except BlockingIOError:
                        time.sleep(0)
            t_sent = time.perf_counter()
            t.join()
            stats = (
                json.loads((d / "stats.json").read_text()) if (d / "stats.json").exists() else {}
            )
        finally:
            proc.terminate()
            proc.wait(5)
    span = (last - first) if got > 1 else float("nan")
    return {
        "frames_sent": frames,
        "frames_delivered": got,
        "frame_bytes": size,
        "send_seconds": t_sent - t0,
        "forward_seconds": span,
        "frames_per_second": got / span if got > 1 else 0.0,
        "loss": 1 - got / frames,
        "switch_stats": stats,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=64, help="frame bytes (default 64)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    results = [run(args.frames, args.size) for _ in range(args.runs)]
    for i, r in enumerate(results, 1):
        print(
            f"run {i}: {r['frames_delivered']}/{r['frames_sent']} frames of {r['frame_bytes']} B, "
            f"{r['frames_per_second']:,.0f} frames/s, loss {r['loss']:.2%}"
        )
    best = sorted(r["frames_per_second"] for r in results)[len(results) // 2]
    print(
        f"median {best:,.0f} frames/s (target >= {TARGET_FPS:,}): "
        f"{'met' if best >= TARGET_FPS else 'NOT MET'}"
    )
    write_json(
        args.json,
        {"benchmark": "switch", "runs": results, "median_fps": best, "loadavg": os.getloadavg()},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
