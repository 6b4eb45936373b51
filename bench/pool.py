"""Warm pool hand-out: `vmkit run --pool` to a ready guest, against resuming the same kind
of paused QEMU directly over QMP (`cont`), side by side in one run.

A (vmkit): `vmkit run --pool warm --json`, spawn -> exit with state ready; the pool is then
left to refill (its background filler) before the next hand-out, so each is measured in
the steady state, not against a filler's CPU.
B (raw): one paused copy resumed with QMP `cont` on its socket (connect, greeting,
qmp_capabilities, cont), no vmkit.
C (library): `Pools.take` and the status `run --pool` reports, in this live process.

    python bench/pool.py --runs 7 --json bench/results/pool.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

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

TARGET_MS = 50.0


def qmp_cont(path: str) -> float:
    t0 = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        f = s.makefile("rwb")
        f.readline()  # greeting
        for cmd in ({"execute": "qmp_capabilities"}, {"execute": "cont"}):
            f.write(json.dumps(cmd).encode() + b"\n")
            f.flush()
            while b'"return"' not in (line := f.readline()):
                if not line:
                    raise BenchError("QMP closed")
    return time.perf_counter() - t0


def wait_full(sb: Sandbox, limit: float = 300.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        (pool,) = sb.vmkit_json("pool", "ls")
        if len(pool["members"]) == pool["size"] and not pool["filling"]:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"the pool did not refill: {pool}")
        time.sleep(0.5)


def library_take(sb: Sandbox) -> tuple[float, str]:
    """Seconds for `Pools.take` plus the status `vmkit run --pool` prints, in this process."""
    os.environ["VMKIT_HOME"] = str(sb.home)
    os.environ["VMKIT_RUNTIME_DIR"] = str(sb.rundir)
    from vmkit import Host
    from vmkit.machine.pool import Pools

    pools = Pools(Host(sb.home))
    t0 = time.perf_counter()
    machine = pools.take("warm")
    st = machine.status()
    elapsed = time.perf_counter() - t0
    pools.start_filler("warm")
    if str(st.state) != "ready":
        raise BenchError(f"Pools.take handed out {machine.name} {st.state}")
    return elapsed, machine.name


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=7, help="timed hand-outs (default 7)")
    ap.add_argument("--json", metavar="FILE", help="write samples and summary as JSON")
    ap.add_argument("--vmkit", metavar="PATH", help="vmkit executable (default: beside python)")
    args = ap.parse_args()
    install_signal_handlers()
    vmkit = vmkit_executable(args.vmkit)
    handout: list[float] = []
    raw: list[float] = []
    library: list[float] = []
    with Sandbox(vmkit) as sb:
        env = environment(vmkit, sb)
        print_header(env)
        sb.vmkit_json("run", "src", "--net", "nat")
        sb.vmkit_json("snapshot", "create", "src", "warm")
        sb.vmkit_cmd("rm", "--force", "src")
        sb.vmkit_json("pool", "create", "warm", "--from", "warm", "--size", "2")
        for i in range(args.runs + 1):
            wait_full(sb)
            t0 = time.perf_counter()
            got = sb.vmkit_json("run", "--pool", "warm")
            a = time.perf_counter() - t0
            if got["state"] != "ready":
                raise BenchError(f"handed out {got['name']} {got['state']}")
            wait_full(sb)
            # B: the raw hypervisor: pause a handed-out copy, then resume it over QMP
            sb.vmkit_json("pause", got["name"])
            qmp = sb.vmkit_json("inspect", got["name"])["runtime"]["sockets"]["qmp"]
            b = qmp_cont(qmp)
            sb.vmkit_cmd("rm", "--force", got["name"])
            # C: the library in this live process (no interpreter start, vmkit imported)
            wait_full(sb)
            c, name = library_take(sb)
            sb.vmkit_cmd("rm", "--force", name)
            tag = "warm-up" if i == 0 else f"run {i}/{args.runs}"
            print(
                f"{tag:>10}: vmkit run --pool {a * MS:7.1f} ms   raw cont {b * MS:6.1f} ms"
                f"   Pools.take in-process {c * MS:6.1f} ms"
            )
            if i:
                handout.append(a)
                raw.append(b)
                library.append(c)
    env["loadavg_end"] = os.getloadavg()
    a_s, b_s = summarize([x * MS for x in handout]), summarize([x * MS for x in raw])
    c_s = summarize([x * MS for x in library])
    print(
        table(
            [
                ["vmkit run --pool (CLI)", f"{a_s['median']:.1f}", f"{a_s['min']:.1f}"],
                ["Pools.take + status, in-process", f"{c_s['median']:.1f}", f"{c_s['min']:.1f}"],
                ["raw QMP cont", f"{b_s['median']:.1f}", f"{b_s['min']:.1f}"],
            ],
            ["hand-out to ready", "median ms", "min ms"],
        )
    )
    met = a_s["median"] <= TARGET_MS
    floor = env["interpreter_floor_ms"]
    above = a_s["median"] - floor
    print(f"target: hand-out to ready <= {TARGET_MS:.0f} ms: {'met' if met else 'NOT met'}")
    print(f"  of the CLI's {a_s['median']:.1f} ms: the interpreter's start and exit {floor:.1f} ms")
    print(f"  (python -c pass), the rest {above:.1f} ms (imports, hand-out, the filler's spawn)")
    write_json(
        args.json,
        {
            "env": env,
            "handout_ms": a_s,
            "handout_above_floor_ms": above,
            "library_ms": c_s,
            "raw_cont_ms": b_s,
            "met": met,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
