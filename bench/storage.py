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
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import write_json

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


@contextlib.contextmanager
def loop_btrfs(work: Path) -> Iterator[Path | None]:
    if os.geteuid() != 0 or not shutil.which("mkfs.btrfs"):
        yield None
        return
    backing = work / "btrfs.img"
    with backing.open("wb") as f:
        f.truncate(8 * GIB)
    subprocess.run(["mkfs.btrfs", "-q", str(backing)], check=True)
    mnt = work / "btrfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-o", "loop", str(backing), str(mnt)]).returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


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
    with loop_btrfs(work) as mnt:
        if mnt is not None:
            b = mnt / "base.img"
            make_image(b, data_mib)
            d = mnt / "clone.img"

            def rm2() -> None:
                d.unlink(missing_ok=True)

            res["vmkit reflink (btrfs)"] = timed(lambda: clone_file(b, d), runs, rm2)
            res["cp --reflink=always (btrfs)"] = timed(
                lambda: subprocess.run(["cp", "--reflink=always", str(b), str(d)], check=True),
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


def bench_download(work: Path, size_mib: int, runs: int) -> dict[str, list[float]]:
    import hashlib

    from vmkit.storage import images

    www = work / "www"
    www.mkdir()
    blob = www / "img.qcow2"
    blob.write_bytes(os.urandom(size_mib * MIB))
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(www))
    )
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/img.qcow2"
    out: dict[str, list[float]] = {"curl": [], "vmkit image pull": []}
    cache = work / "cache"
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(["curl", "-s", "-o", str(work / "c.out"), url], check=True)
            out["curl"].append(time.perf_counter() - t0)
            shutil.rmtree(cache, ignore_errors=True)
            os.environ["VMKIT_CACHE"] = str(cache)
            t0 = time.perf_counter()
            images.pull(url, "x86_64", f"sha256:{digest}")
            out["vmkit image pull"].append(time.perf_counter() - t0)
    finally:
        srv.shutdown()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", type=Path, help="where the clone source goes (default: tmp)")
    ap.add_argument("--data", type=int, default=256, help="MiB of data in the 4 GiB image")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--download-mib", type=int, default=256)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="vkbench-") as tmp:
        work = Path(tmp)
        clones = bench_clones(work, args.data, args.runs)
        seed = bench_seed(work, args.runs)
        down = bench_download(work, args.download_mib, args.runs) if shutil.which("curl") else {}
    med = statistics.median
    print(f"clone of a 4 GiB sparse image holding {args.data} MiB (median of {args.runs}):")
    for k, v in clones.items():
        print(f"  {k:32s} {med(v) * 1000:9.1f} ms")
    print(f"seed ISO (pycdlib):                {med(seed) * 1000:9.1f} ms")
    for k, v in down.items():
        print(
            f"download {args.download_mib} MiB, {k:18s} {med(v) * 1000:9.1f} ms "
            f"({args.download_mib / med(v):.0f} MiB/s)"
        )
    write_json(
        args.json,
        {
            "benchmark": "storage",
            "clones": clones,
            "seed_iso": seed,
            "download": down,
            "data_mib": args.data,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
