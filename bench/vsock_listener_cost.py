"""What a vsock listener would add to the tiny guest's initramfs: each candidate Debian
package with every shared library it loads (DT_NEEDED, followed through the packages that
ship them), appended as a second cpio archive to a built guest's initramfs and compressed
the way guest/build.py compresses it (gzip, level 9, mtime 0).

The guest needs something on vsock port 22 that hands connections to dropbear (busybox's
nc has no AF_VSOCK). Debian's candidates: socat (`VSOCK-LISTEN`) and nmap's ncat
(`--vsock`); both link OpenSSL.

    python bench/vsock_listener_cost.py --guest ~/.cache/vmkit/guest/6.1.0-57-amd64-amd64-cff0225e58
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from vmkit.guest import cpio

# candidate -> (binary in the package, Debian packages holding it and its libraries)
CANDIDATES = {
    "socat": ("usr/bin/socat", ["socat", "libssl3", "libwrap0", "libnsl2", "libtirpc3",
              "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libcom-err2",
              "libkrb5support0", "libkeyutils1"]),
    "ncat": ("usr/bin/ncat", ["ncat", "libssl3", "libpcap0.8", "liblua5.3-0",
             "libdbus-1-3", "libsystemd0", "libcap2", "libgcrypt20", "liblz4-1",
             "liblzma5", "libzstd1", "libgpg-error0"]),
}  # fmt: skip
IN_GUEST_ALREADY = {"libc.so.6", "ld-linux-x86-64.so.2", "libz.so.1", "libcrypt.so.1"}
LIBDIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")


def needed(path: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def closure(tree: Path, binary: str) -> tuple[dict[str, Path], list[str]]:
    """Guest path -> file for the binary and every library it loads; the sonames that none
    of the packages ship (libc's own, e.g. libresolv, which the guest would also need)."""
    files = {binary: tree / binary}
    todo, seen, missing = [tree / binary], set(IN_GUEST_ALREADY), []
    while todo:
        for name in needed(todo.pop()):
            if name in seen:
                continue
            seen.add(name)
            found = next((tree / d / name for d in LIBDIRS if (tree / d / name).exists()), None)
            if found is None:
                missing.append(name)
                continue
            files[f"lib/x86_64-linux-gnu/{name}"] = found.resolve()
            todo.append(found.resolve())
    return files, missing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guest", required=True, type=Path, help="a built amd64 tiny guest dir")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    base = (args.guest / "initramfs.cpio.gz").read_bytes()
    raw = gzip.decompress(base)
    results = {"guest": str(args.guest), "initramfs_gz": len(base), "candidates": {}}
    print(f"tiny guest initramfs: {len(base) / 1e6:.2f} MB (gzip), {len(raw) / 1e6:.2f} MB raw")
    for name, (binary, packages) in CANDIDATES.items():
        with tempfile.TemporaryDirectory(prefix="vmkit-vsock-cost-") as tmp:
            work = Path(tmp)
            subprocess.run(["apt-get", "download", *packages], cwd=work, check=True,
                           capture_output=True)  # fmt: skip
            tree = work / "tree"
            for deb in sorted(work.glob("*.deb")):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
            files, missing = closure(tree, binary)
            entries = [cpio.directory("lib/x86_64-linux-gnu")]
            entries += [cpio.file(dest, src.read_bytes(), 0o755) for dest, src in files.items()]
            grown = gzip.compress(raw + cpio.write(entries), mtime=0)
            raw_bytes = sum(src.stat().st_size for src in files.values())
            results["candidates"][name] = {
                "files": {d: s.stat().st_size for d, s in files.items()},
                "missing": missing,
                "initramfs_gz": len(grown),
                "growth_gz": len(grown) - len(base),
            }
            print(f"{name:6} {len(files):2} files, {raw_bytes / 1e6:.2f} MB raw -> initramfs "
                  f"{len(grown) / 1e6:.2f} MB (+{(len(grown) - len(base)) / 1e6:.2f} MB, "
                  f"+{100 * (len(grown) - len(base)) / len(base):.0f} %); not in the packages: "
                  f"{', '.join(missing) or '-'}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    if shutil.which("readelf") is None:
        sys.exit("readelf (binutils) is needed")
    sys.exit(main())
