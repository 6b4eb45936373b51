"""Snapshot/restore of the tiny guest: restore-to-ready vs cold boot and vs raw QEMU.

A (cold): `vmkit run cold-NN --json`, spawn -> exit with state ready.
B (restore, CLI): `vmkit restore warm --name copy-NN --json`, spawn -> exit with state ready
(the guest re-announces readiness through its control port).
C (restore, library): `Host().restore("warm", name)` in this process, call -> return (ready).
D (raw): the argv vmkit ran for a restored copy, started directly: spawn, QMP handshake,
the same migrate-set-capabilities/getfd/migrate-incoming, the MIGRATION event, then the
same "restored MAC" request on the control port (after the note "keep-addr" when the
guest's first NIC is on QEMU's NAT: --net nat) and its answer, which is the restored
guest's readiness (it prints its console line after answering; an agent older than this
session printed it first). This is QEMU's and the guest's own share of a restore.
Interleaved A B C D after one untimed round; the snapshot is of a ready guest.

Also: restore time of a 1 GiB guest's snapshot (restore must not grow with RAM: the RAM is
a file the copies map copy-on-write), snapshot time and size, where a library restore spends
its time, and the memory of N restored copies running at once (summed PSS vs one copy's RSS).

    python bench/snapshot.py --runs 5 --copies 10 --json bench/results/snapshot.json
    python bench/snapshot.py --runs 5 --copies 10 --net nat   # copies on QEMU's NAT
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
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
TARGET_RESTORE_MS = 150.0
TARGET_PSS_RATIO = 2.0


def timed_json(sb: Sandbox, *args: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = sb.vmkit_json(*args)
    return time.perf_counter() - t0, out


def memory_of_copies(sb: Sandbox, n: int, snap: str) -> list[dict[str, float]]:
    rows = []
    for i in range(n):
        sb.vmkit_json("restore", snap, "--name", f"mem-{i}")
    time.sleep(2)
    for i in range(n):
        pid = sb.vmkit_json("inspect", f"mem-{i}")["status"]["pid"]
        full = psutil.Process(pid).memory_full_info()
        ram = ram_mapping(pid)
        rows.append(
            {
                "rss": full.rss / MIB,
                "pss": full.pss / MIB,
                "uss": full.uss / MIB,
                "ram_rss": ram.get("Rss", 0) / 1024,
                "ram_pss": ram.get("Pss", 0) / 1024,
                "ram_private": (ram.get("Private_Dirty", 0) + ram.get("Private_Clean", 0)) / 1024,
            }
        )
    for i in range(n):
        sb.vmkit_cmd("rm", "--force", f"mem-{i}")
    return rows


def ram_mapping(pid: int) -> dict[str, int]:
    """kB counters of the process's mapping of a snapshot's RAM file (the guest's RAM)."""
    out: dict[str, int] = {}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith("/ram.qemu")
        elif inside and line.endswith(" kB"):
            key, value = line.split(":", 1)
            out[key] = out.get(key, 0) + int(value.split()[0])
    return out


class Phases:
    """Wall time of the named steps of an in-process restore (wrapped methods)."""

    def __init__(self) -> None:
        from vmkit.drivers.qemu import control
        from vmkit.machine import facade

        self.samples: dict[str, list[float]] = {}
        for cls, name in (
            (facade.Machine, "launch"),
            (facade.Machine, "wait_control"),
            (control.QemuControl, "complete_restore"),
            (control.QemuControl, "announce_readiness"),
            (facade.Machine, "wait_ready"),
        ):
            setattr(cls, name, self._wrap(name, getattr(cls, name)))

    def _wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.samples.setdefault(label, []).append(time.perf_counter() - t0)

        return timed


def library_restore(host: Any, snap: str, name: str) -> float:
    t0 = time.perf_counter()
    vm = host.restore(snap, name)
    took = time.perf_counter() - t0
    if vm.status().state.value != "ready":
        raise BenchError(f"library restore of {name} is not ready")
    return took


def raw_template(sb: Sandbox, snap: str) -> tuple[list[str], dict[str, str], list[Any]]:
    """The argv vmkit ran for a copy (its VM dir kept, the VMM stopped), sockets, NICs."""
    from vmkit.spec_devices import Network

    sb.vmkit_json("restore", snap, "--name", "rawtpl")
    rt = json.loads((sb.home / "vms" / "rawtpl" / "runtime.json").read_text())
    nets = sb.vmkit_json("inspect", "rawtpl")["spec"]["networks"]
    networks = [Network.parse(n) for n in nets]
    sb.vmkit_cmd("kill", "rawtpl")
    return list(rt["argv"]), dict(rt["sockets"]), networks


def raw_restore(
    argv: list[str], sockets: dict[str, str], state: Path, networks: list[Any]
) -> float:
    """QEMU started directly with vmkit's argv; the same QMP and control-port exchange
    (guestctl.restored_request: `keep-addr` first when eth0 is on QEMU's NAT)."""
    from vmkit.drivers.qemu import guestctl
    from vmkit.drivers.qmp import QMP, QMPError

    for path in sockets.values():
        Path(path).unlink(missing_ok=True)
    for key in ("ctl.in", "ctl.out"):
        os.mkfifo(sockets[key], 0o600)
    qmp = Path(sockets["qmp"])
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while not qmp.exists():
            if proc.poll() is not None:
                raise BenchError("raw QEMU exited at start")
            time.sleep(0.001)
        while True:  # the socket exists once bound; it answers once QEMU listens
            try:
                q = QMP(qmp, timeout=30)
                break
            except QMPError:
                if proc.poll() is not None:
                    raise BenchError("raw QEMU exited at start") from None
                time.sleep(0.001)
        fd = os.open(state, os.O_RDONLY)
        with q:
            caps = [{"capability": c, "state": True} for c in ("events", "x-ignore-shared")]
            q.execute("migrate-set-capabilities", {"capabilities": caps})
            q.execute("getfd", {"fdname": "raw"}, fd=fd)
            os.close(fd)
            q.execute("migrate-incoming", {"uri": "fd:raw"})
            while q.wait_event({"MIGRATION"}, 30)["data"]["status"] != "completed":
                pass
            if q.execute("query-status")["status"] != "running":
                q.execute("cont")
        notes, line = guestctl.restored_request(networks, own_agent=True)  # the tiny guest
        reply = guestctl.request(sockets["ctl.in"].removesuffix(".in"), line, 30, notes=notes)
        took = time.perf_counter() - t0
        if not reply.startswith("ok"):
            raise BenchError(f"raw restore: the guest answered {reply!r}")
        return took
    finally:
        proc.kill()
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=5, help="timed rounds (default 5)")
    ap.add_argument("--copies", type=int, default=10, help="restored copies for memory (10)")
    ap.add_argument("--big", default="1G", help="the larger guest's RAM (default 1G)")
    ap.add_argument("--json", metavar="FILE", help="write samples and summary as JSON")
    ap.add_argument("--vmkit", metavar="PATH", help="vmkit executable (default: beside python)")
    ap.add_argument(
        "--net",
        default="none",
        metavar="MODE",
        help="the guests' NIC, as `vmkit run --net` (default none; nat: a restored copy "
        "keeps its address, switch:NAME: it leases a new one)",
    )
    args = ap.parse_args()
    net = ("--net", args.net)
    install_signal_handlers()
    vmkit = vmkit_executable(args.vmkit)
    samples: dict[str, list[float]] = {k: [] for k in ("cold", "cli", "lib", "raw", "big")}
    snap_s: dict[str, float] = {}
    with Sandbox(vmkit) as sb:
        env = environment(vmkit, sb)
        print_header(env)
        os.environ.update(VMKIT_HOME=str(sb.home), VMKIT_RUNTIME_DIR=str(sb.rundir))
        from vmkit.machine import Host

        host = Host()
        phases = Phases()
        snaps = {}
        for label, mem in (("warm", "256M"), ("big", args.big)):
            sb.vmkit_json("run", f"src-{label}", "--memory", mem, *net)
            time.sleep(1)
            took, snaps[label] = timed_json(sb, "snapshot", "create", f"src-{label}", label)
            snap_s[label] = took
            sb.vmkit_cmd("rm", "--force", f"src-{label}")
        argv, sockets, networks = raw_template(sb, "warm")
        state = Path(snaps["warm"]["path"]) / snaps["warm"]["state_file"]
        for i in range(args.runs + 1):
            c, st = timed_json(sb, "run", f"cold-{i:02d}", *net)
            r, rt = timed_json(sb, "restore", "warm", "--name", f"cli-{i:02d}")
            if st["state"] != "ready" or rt["state"] != "ready":
                raise BenchError(f"not ready: {st['state']} / {rt['state']}")
            phases.samples.clear()
            lib = library_restore(host, "warm", f"lib-{i:02d}")
            lib_phases = {k: sum(v) for k, v in phases.samples.items()}
            raw = raw_restore(argv, sockets, state, networks)
            b, _ = timed_json(sb, "restore", "big", "--name", f"big-{i:02d}")
            sb.vmkit_cmd("rm", "--force", f"cold-{i:02d}", f"cli-{i:02d}", f"lib-{i:02d}",
                         f"big-{i:02d}")  # fmt: skip
            tag = "warm-up" if i == 0 else f"run {i}/{args.runs}"
            print(
                f"{tag:>10}: cold {c * MS:5.0f}  cli {r * MS:4.0f}  lib {lib * MS:4.0f}  "
                f"raw {raw * MS:4.0f}  {args.big} {b * MS:4.0f} ms   lib phases: "
                + " ".join(f"{k} {v * MS:.0f}" for k, v in lib_phases.items()),
                flush=True,
            )
            if i:
                for key, val in (("cold", c), ("cli", r), ("lib", lib), ("raw", raw), ("big", b)):
                    samples[key].append(val)
        phase_runs = dict(phases.samples)
        mem = memory_of_copies(sb, args.copies, "warm")
    env["loadavg_end"] = os.getloadavg()
    env["net"] = args.net

    summary = {k: summarize(v) for k, v in samples.items()}
    labels = {
        "cold": "cold boot to ready (vmkit run)",
        "cli": "restore to ready (vmkit restore, 256 MiB)",
        "lib": "restore to ready (Host.restore in process)",
        "raw": "raw QEMU: same argv + QMP + control port",
        "big": f"restore to ready (vmkit restore, {args.big})",
    }
    print()
    print(
        table(
            [
                [
                    labels[k],
                    s["n"],
                    f"{s['median'] * MS:.0f}",
                    f"{s['min'] * MS:.0f}",
                    f"{s['max'] * MS:.0f}",
                    f"{s['stdev'] * MS:.0f}",
                ]
                for k, s in summary.items()
            ],
            ["ms", "n", "median", "min", "max", "stdev"],
        )
    )
    for label, snap in snaps.items():
        print(
            f"snapshot {label}: {snap_s[label] * MS:.0f} ms, shared RAM: {snap['shared_ram']}, "
            f"state file {snap['state_bytes'] / MIB:.2f} MiB, on disk {snap['bytes'] / MIB:.1f} MiB"
        )
    cli_ms = summary["cli"]["median"] * MS
    lib_ms = summary["lib"]["median"] * MS
    print(
        f"restore <= {TARGET_RESTORE_MS:.0f} ms: CLI {cli_ms:.0f} ms, library {lib_ms:.0f} ms, "
        f"raw {summary['raw']['median'] * MS:.0f} ms: "
        f"{'met' if cli_ms <= TARGET_RESTORE_MS else 'NOT MET'}"
    )
    total_pss = sum(m["pss"] for m in mem)
    ratio = total_pss / mem[0]["rss"]
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
                    f"{total_pss:.1f}",
                    f"{sum(m['uss'] for m in mem):.1f}",
                ]
            ],
            ["QEMU MiB", "RSS", "PSS", "USS"],
        )
    )
    ram_pss = sum(m["ram_pss"] for m in mem)
    ram_ratio = ram_pss / mem[0]["ram_rss"] if mem[0]["ram_rss"] else float("nan")
    print(
        f"guest RAM only (each copy's mapping of ram.qemu): summed PSS {ram_pss:.1f} MiB = "
        f"{ram_ratio:.2f}x one copy's {mem[0]['ram_rss']:.1f} MiB RSS of it; private per copy "
        + ", ".join(f"{m['ram_private']:.1f}" for m in mem)
        + " MiB"
    )
    print(
        f"{len(mem)} copies: summed PSS {total_pss:.0f} MiB = {ratio:.2f}x one copy's RSS "
        f"(target < {TARGET_PSS_RATIO:g}x): {'met' if ratio < TARGET_PSS_RATIO else 'NOT MET'}"
    )
    write_json(
        args.json,
        {
            "benchmark": "snapshot",
            "environment": env,
            "samples_seconds": samples,
            "summary": summary,
            "library_restore_phases_seconds": phase_runs,
            "snapshots": {k: {"record": v, "seconds": snap_s[k]} for k, v in snaps.items()},
            "memory_of_copies_mib": mem,
            "pss_over_rss": ratio,
            "guest_ram_pss_over_rss": ram_ratio,
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
