"""Storage: cloning a 4 GiB image by each method next to `cp`, seed ISO creation, and image
download throughput next to `curl` against the same local server.

The clone source is a sparse 4 GiB raw image with `--data` MiB of data in it. Reflink runs
on a loopback btrfs made for the run (needs root and mkfs.btrfs); the others on the
directory given with `--dir` (default: a temp dir).

    python bench/storage.py --json bench/results/storage.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import git_state, write_json

from vmkit.storage.clone import clone_file
from vmkit.storage.seed import build_iso, user_data

GIB = 1 << 30
MIB = 1 << 20


def make_image(path: Path, data_mib: int) -> None:
    with path.open("wb") as f:
        f.truncate(4 * GIB)
        chunk = os.urandom(MIB)
        for i in range(data_mib):
            f.seek(i * 8 * MIB)  # spread over the image: many extents
            f.write(chunk)
    os.sync()


def timed(fn: Callable[[], Any], runs: int, cleanup: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(runs):
        cleanup()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    cleanup()
    return out


MKFS = {"btrfs": ["mkfs.btrfs", "-q"], "xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"]}


@contextlib.contextmanager
def loop_fs(work: Path, fs: str) -> Iterator[Path | None]:
    """A loopback `fs` (btrfs or xfs) for the reflink rows; None if it cannot be made."""
    if os.geteuid() != 0 or not shutil.which(MKFS[fs][0]):
        yield None
        return
    backing = work / f"{fs}.img"
    with backing.open("wb") as f:
        f.truncate(8 * GIB)
    subprocess.run([*MKFS[fs], str(backing)], check=True, capture_output=True)
    mnt = work / fs
    mnt.mkdir()
    if subprocess.run(["mount", "-o", "loop", str(backing), str(mnt)]).returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        backing.unlink()


def bench_clones(work: Path, data_mib: int, runs: int) -> dict[str, list[float]]:
    res: dict[str, list[float]] = {}
    base = work / "base.img"
    make_image(base, data_mib)
    dst = work / "clone.img"

    def rm() -> None:
        dst.unlink(missing_ok=True)

    res["vmkit sparse copy"] = timed(lambda: clone_file(base, dst), runs, rm)
    res["vmkit qcow2 overlay"] = timed(lambda: clone_file(base, dst, allow_overlay=True), runs, rm)
    res["cp --sparse=always"] = timed(
        lambda: subprocess.run(["cp", "--sparse=always", str(base), str(dst)], check=True),
        runs,
        rm,
    )
    res["cp --sparse=always; sync -f"] = timed(
        lambda: (
            subprocess.run(["cp", "--sparse=always", str(base), str(dst)], check=True),
            subprocess.run(["sync", "-f", str(dst)], check=True),
        ),
        runs,
        rm,
    )
    base.unlink()
    for fs in sorted(MKFS):
        with loop_fs(work, fs) as mnt:
            if mnt is None:
                print(f"note: no loopback {fs} (needs root and {MKFS[fs][0]}): no {fs} rows")
                continue
            b = mnt / "base.img"
            make_image(b, data_mib)
            d = mnt / "clone.img"

            def rm2(d: Path = d) -> None:
                d.unlink(missing_ok=True)

            res[f"vmkit reflink ({fs})"] = timed(lambda b=b, d=d: clone_file(b, d), runs, rm2)
            res[f"cp --reflink=always ({fs})"] = timed(
                lambda b=b, d=d: subprocess.run(
                    ["cp", "--reflink=always", str(b), str(d)], check=True
                ),
                runs,
                rm2,
            )
    return res


def bench_seed(work: Path, runs: int) -> list[float]:
    doc = user_data(
        {"hostname": "bench", "packages": ["nginx"]}, "VMKIT_READY", ["ssh-ed25519 AAAA x"]
    )
    iso = work / "seed.iso"
    return timed(
        lambda: build_iso(iso, doc, {"instance-id": "bench"}),
        runs,
        lambda: iso.unlink(missing_ok=True),
    )


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[str]:
    """`python -m http.server` in its own process on 127.0.0.1: curl and vmkit fetch from
    the same server, and the server never competes with vmkit for this process's GIL."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "-d", str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's HTTP server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def bench_download(work: Path, size_mib: int, runs: int) -> dict[str, list[float]]:
    """The same file from the same local server: curl alone, curl + sha256sum + sync (what
    vmkit does: verify, and have the bytes on disk before they count), and vmkit's pull."""
    import hashlib

    from vmkit.storage import images

    www = work / "www"
    www.mkdir()
    blob = www / "img.qcow2"
    blob.write_bytes(os.urandom(size_mib * MIB))
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    out: dict[str, list[float]] = {
        "curl -o": [],
        "curl -o; sync -f": [],
        "curl -o; sha256sum; sync -f": [],
        "vmkit image pull": [],
    }
    cache = work / "cache"
    got = work / "c.out"
    with http_server(www) as base:
        url = f"{base}/img.qcow2"
        for _ in range(runs):
            got.unlink(missing_ok=True)
            t0 = time.perf_counter()
            subprocess.run(["curl", "-s", "-o", str(got), url], check=True)
            out["curl -o"].append(time.perf_counter() - t0)
            got.unlink()
            t0 = time.perf_counter()
            subprocess.run(["curl", "-s", "-o", str(got), url], check=True)
            subprocess.run(["sync", "-f", str(got)], check=True)
            out["curl -o; sync -f"].append(time.perf_counter() - t0)
            got.unlink()
            t0 = time.perf_counter()
            subprocess.run(["curl", "-s", "-o", str(got), url], check=True)
            subprocess.run(["sha256sum", str(got)], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["sync", "-f", str(got)], check=True)
            out["curl -o; sha256sum; sync -f"].append(time.perf_counter() - t0)
            shutil.rmtree(cache, ignore_errors=True)
            os.environ["VMKIT_CACHE"] = str(cache)
            t0 = time.perf_counter()
            images.pull(url, "x86_64", f"sha256:{digest}")
            out["vmkit image pull"].append(time.perf_counter() - t0)
    return out


def environment_facts() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_state(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "kernel": os.uname().release,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", type=Path, help="where the clone source goes (default: tmp)")
    ap.add_argument("--data", type=int, default=256, help="MiB of data in the 4 GiB image")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--download-mib", type=int, default=256)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--parts", default="clones,seed,download", help="comma-separated subset to run")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="vkbench-") as tmp:
        work = Path(tmp)
        clones = bench_clones(work, args.data, args.runs) if "clones" in parts else {}
        seed = bench_seed(work, args.runs) if "seed" in parts else []
        down: dict[str, list[float]] = {}
        if "download" in parts and shutil.which("curl"):
            down = bench_download(work, args.download_mib, args.runs)
    med = statistics.median
    if clones:
        print(f"clone of a 4 GiB sparse image holding {args.data} MiB (median of {args.runs}):")
    for k, v in clones.items():
        lo, hi = min(v) * 1000, max(v) * 1000
        print(f"  {k:34s} {med(v) * 1000:9.1f} ms  (min {lo:.1f}, max {hi:.1f})")
    if seed:
        print(f"seed ISO (pycdlib, median of {args.runs}): {med(seed) * 1000:.1f} ms")
    if "download" in parts and not down:
        print("note: curl not found: no download comparison")
    for k, v in down.items():
        print(
            f"download {args.download_mib} MiB, {k:30s} {med(v) * 1000:7.1f} ms "
            f"({args.download_mib / med(v):.0f} MiB/s)"
        )
    write_json(
        args.json,
        {
            "benchmark": "storage",
            "environment": environment_facts(),
            "clones": clones,
            "seed_iso": seed,
            "download": down,
            "data_mib": args.data,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
