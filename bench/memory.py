"""Memory of one tiny guest booted by vmkit, and the zero-daemon check.

Boots the tiny guest with `vmkit run mem-bench --memory 256M --json`, reads QEMU's pid from
`vmkit inspect mem-bench --json` (status.pid), and samples QEMU's memory with psutil: RSS,
USS/PSS/swap (memory_full_info) and peak RSS (VmHWM), once at readiness and once after
--settle seconds. Then checks that no vmkit/python process stayed resident after
`vmkit run` returned: vmkit has no daemon, so besides QEMU nothing of this run may be left.
Finally `vmkit stop` and `vmkit rm`.

    python bench/memory.py --json bench/results/memory.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from _common import (
    BenchError,
    Sandbox,
    environment,
    install_signal_handlers,
    print_header,
    table,
    vmkit_executable,
    write_json,
)

NAME = "mem-bench"
MIB = 1 << 20


def sample(pid: int) -> dict[str, int | None]:
    """QEMU's memory in bytes: rss and vms always; uss/pss/swap/peak where the OS tells."""
    proc = psutil.Process(pid)
    info = proc.memory_info()
    out: dict[str, int | None] = {"rss": info.rss, "vms": info.vms}
    try:
        full = proc.memory_full_info()
        out.update(
            {
                "uss": getattr(full, "uss", None),
                "pss": getattr(full, "pss", None),
                "swap": getattr(full, "swap", None),
            }
        )
    except psutil.AccessDenied:
        out.update({"uss": None, "pss": None, "swap": None})
    out["peak_rss"] = _vm_hwm(pid)
    return out


def _vm_hwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_breakdown(pid: int, guest_bytes: int) -> dict[str, int] | None:
    """QEMU's RSS split by mapping (from /proc/PID/smaps), in bytes; None if unreadable.

    guest_ram: the anonymous mapping as large as the guest's memory (pages the guest touched);
    files: file-backed mappings (the kernel image QEMU keeps mapped, the binary, libraries);
    other_anon: everything else anonymous (heap, TCG translation cache, device state).
    """
    out = {"guest_ram": 0, "files": 0, "other_anon": 0}
    kind = "other_anon"
    size = 0
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping header: "start-end perms off dev inode [path]"
            path = fields[5] if len(fields) > 5 else ""
            kind = "files" if path.startswith("/") else "other_anon"
        elif fields[0] == "Size:":
            size = int(fields[1]) * 1024
            if kind == "other_anon" and size == guest_bytes:
                kind = "guest_ram"
        elif fields[0] == "Rss:":
            out[kind] += int(fields[1]) * 1024
    return out


def resident_after_run(sb: Sandbox, qemu_pid: int) -> tuple[list[dict[str, Any]], int]:
    """(processes of this run still alive besides QEMU, other processes naming 'vmkit').

    Ours: a process whose cmdline contains 'vmkit' or a path of this run's sandbox, or whose
    VMKIT_HOME is the sandbox's. Others (e.g. a test suite running at the same time) only
    count for information; this benchmark and its ancestors are left out.
    """
    me = psutil.Process()
    skip = {me.pid, qemu_pid, *(p.pid for p in me.parents())}
    ours = {p.pid: p for p in sb.owned_processes(exclude=list(skip))}
    others = 0
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid in skip or p.pid in ours:
            continue
        if any("vmkit" in a for a in (p.info["cmdline"] or [])):
            others += 1
    found = []
    for p in ours.values():
        try:
            found.append({"pid": p.pid, "ppid": p.ppid(), "cmdline": p.cmdline()})
        except psutil.Error:
            continue
    return found, others


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--memory", default="256M", help="guest memory (default 256M)")
    ap.add_argument(
        "--settle", type=float, default=3.0, help="seconds before the 2nd sample (default 3)"
    )
    ap.add_argument(
        "--bzimage",
        action="store_true",
        help="boot the tiny guest's bzImage instead of its default (PVH vmlinux on x86_64)",
    )
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to boot (default 180)")
    ap.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    ap.add_argument("--vmkit", metavar="PATH", help="vmkit executable (default: beside python)")
    args = ap.parse_args()

    install_signal_handlers()
    vmkit = vmkit_executable(args.vmkit)
    out: dict[str, Any] = {"benchmark": "memory", "guest_memory": args.memory}
    with Sandbox(vmkit) as sb:
        env = environment(vmkit, sb)
        out["environment"] = env
        print_header(env)
        guest = sb.vmkit_json("guest", "path")
        boot_flags: list[str] = []
        if args.bzimage:
            kernel = guest["bzimage"]
            boot_flags = ["--kernel", kernel, "--initrd", guest["initrd"]]
            boot_flags += ["--cmdline", "console=ttyS0 quiet"]
        else:
            kernel = guest["kernel"]
        kernel_mib = Path(kernel).stat().st_size / MIB
        print(f"kernel: {kernel} ({kernel_mib:.1f} MiB)")
        out["kernel"] = kernel
        t0 = time.perf_counter()
        status = sb.vmkit_json(
            "run", NAME, "--memory", args.memory, *boot_flags, timeout=args.timeout
        )
        boot_s = time.perf_counter() - t0
        if status.get("state") != "ready":
            raise BenchError(f"`vmkit run` ended with state {status.get('state')!r}")
        # Right after `vmkit run` returned: is anything of this run but QEMU left?
        leftover_now, others = resident_after_run(sb, int(status["pid"]))
        pid = int(sb.vmkit_json("inspect", NAME)["status"]["pid"])
        if pid != status["pid"]:
            raise BenchError(f"`vmkit inspect` says pid {pid}, `vmkit run` said {status['pid']}")
        at_ready = sample(pid)
        split = rss_breakdown(pid, _size(args.memory))
        qemu = psutil.Process(pid)
        qemu_name = qemu.name()
        parent = qemu.parent()
        parent_desc = "none" if parent is None else f"pid {parent.pid} ({parent.name()})"
        time.sleep(args.settle)
        settled = sample(pid)
        leftover_later, others_later = resident_after_run(sb, pid)
        stop = sb.vmkit_json("stop", NAME, timeout=120)
        sb.vmkit_cmd("rm", NAME)

    env["loadavg_end"] = os.getloadavg()
    leftovers = leftover_now + [p for p in leftover_later if p not in leftover_now]
    print(f"\nbooted in {boot_s:.2f}s (vmkit run, wall); QEMU pid {pid} ({qemu_name})")
    keys = ["rss", "pss", "uss", "swap", "peak_rss", "vms"]
    rows = [
        ["at ready", *(mib(at_ready[k]) for k in keys)],
        [f"after {args.settle:g}s", *(mib(settled[k]) for k in keys)],
    ]
    print(table(rows, ["QEMU, MiB", "RSS", "PSS", "USS", "swap", "peak RSS", "virtual"]))
    if split:
        print(
            f"RSS at ready by mapping: guest RAM touched {mib(split['guest_ram'])} MiB "
            f"(of {args.memory}), files {mib(split['files'])} MiB (kernel image, QEMU, libs), "
            f"other anonymous {mib(split['other_anon'])} MiB (heap, TCG code cache)"
        )
    print(f"\nQEMU's parent once `vmkit run` returned: {parent_desc}")
    if leftovers:
        print("zero-daemon: FAIL, still resident after `vmkit run` returned:")
        for p in leftovers:
            print(f"  pid {p['pid']} (ppid {p['ppid']}): {' '.join(p['cmdline'])}")
    else:
        print("zero-daemon: ok, nothing of this run but QEMU was resident after `vmkit run`")
    if others or others_later:
        print(
            f"  ({max(others, others_later)} other process(es) mention 'vmkit' but are not "
            "from this run, e.g. other test runs; ignored)"
        )
    print(f"stopped with {stop[0]['step']} in {stop[0]['seconds']:.2f}s")
    out.update(
        {
            "qemu_pid": pid,
            "qemu_parent": parent_desc,
            "boot_seconds": boot_s,
            "at_ready_bytes": at_ready,
            "settled_bytes": settled,
            "rss_breakdown_at_ready_bytes": split,
            "settle_seconds": args.settle,
            "zero_daemon": {"ok": not leftovers, "leftovers": leftovers},
            "stop": stop,
        }
    )
    write_json(args.json, out)
    return 0 if not leftovers else 1


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
