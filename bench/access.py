"""`vmkit exec` and `vmkit cp` against plain `ssh` over the same connection.

One tiny guest (1 GiB: its root filesystem is RAM), reached over QEMU's virtio-serial port.

exec: A-first = `vmkit exec NAME -- true` right after the VM's master connection was closed
(`ssh -O exit`), so it pays the handshake; A-warm = the same on the open connection;
B = plain `ssh` with the argv `vmkit ssh NAME --print` gives (same options, same master)
running `true`. Interleaved A-warm/B.

cp: a file of --size-mib MiB in and out with `vmkit cp`, against plain ssh streaming the same
bytes over the same connection (`ssh ... 'cat > F' < F`, `ssh ... cat F > F`): the tiny guest
has no scp or sftp server, so a plain stream is the baseline scp would at best reach.

    python bench/access.py --runs 10 --size-mib 100 --json bench/results/access.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any

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

# Machine.exec in one process: what a Python user pays per command (no interpreter start).
API_LOOP = """
import json, sys, time, vmkit
m = vmkit.Host().get("acc")
out = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    assert m.exec(["true"]).returncode == 0
    out.append(time.perf_counter() - t0)
print(json.dumps(out))
"""


def timed(argv: list[str], env: dict[str, str], stdin: Any = subprocess.DEVNULL,
          stdout: Any = subprocess.DEVNULL) -> float:  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"`{shlex.join(argv)}` exited {proc.returncode}: {proc.stderr!r}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--vmkit", metavar="PATH")
    args = ap.parse_args()
    install_signal_handlers()
    vmkit = vmkit_executable(args.vmkit)
    with Sandbox(vmkit, prefix="vmkit-bench-access-") as sb:
        env_info = environment(vmkit, sb)
        print_header(env_info)
        sb.vmkit_cmd("run", "acc", "--memory", "1G", "--net", "none", "--wait-for", "ssh")
        ssh = shlex.split(sb.vmkit_cmd("ssh", "acc", "--print").stdout.strip())
        dest = ssh[-1]
        exit_master = [*ssh[:-1], "-O", "exit", dest]
        samples: dict[str, list[float]] = {"first": [], "warm": [], "plain": []}
        for i in range(args.runs):
            subprocess.run(exit_master, env=sb.env, capture_output=True)
            samples["first"].append(timed([vmkit, "exec", "acc", "--", "true"], sb.env))
            samples["warm"].append(timed([vmkit, "exec", "acc", "--", "true"], sb.env))
            samples["plain"].append(timed([*ssh, "true"], sb.env))
            print(f"  exec {i + 1}/{args.runs}: first {samples['first'][-1] * MS:.0f} ms, "
                  f"warm {samples['warm'][-1] * MS:.0f} ms, "
                  f"ssh {samples['plain'][-1] * MS:.0f} ms")  # fmt: skip
        api = subprocess.run(
            [sys.executable, "-c", API_LOOP, str(args.runs)],
            env=sb.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        samples["api"] = json.loads(api.stdout)
        big = sb.root / "big.bin"
        with big.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        cp: dict[str, float] = {}
        cp["vmkit cp in"] = timed([vmkit, "cp", str(big), "acc:/root/a.bin"], sb.env)
        with big.open("rb") as f:
            cp["ssh cat in"] = timed([*ssh, "cat > /root/b.bin"], sb.env, stdin=f)
        out = sb.root / "out"
        out.mkdir()
        cp["vmkit cp out"] = timed([vmkit, "cp", "acc:/root/a.bin", str(out / "a.bin")], sb.env)
        with (out / "b.bin").open("wb") as f:
            cp["ssh cat out"] = timed([*ssh, "cat /root/b.bin"], sb.env, stdout=f)
        for name in ("a.bin", "b.bin"):
            if (out / name).read_bytes() != big.read_bytes():
                raise BenchError(f"{name} came back different")
        rows = []
        for key, label in (("first", "vmkit exec -- true, first (handshake)"),
                           ("warm", "vmkit exec -- true, warm (multiplexed)"),
                           ("plain", "ssh (same argv) true, warm"),
                           ("api", "Machine.exec(['true']), warm, in-process")):  # fmt: skip
            s = summarize([x * MS for x in samples[key]])
            rows.append([label, s["n"], f"{s['median']:.0f}", f"{s['min']:.0f}",
                         f"{s['max']:.0f}", f"{s['stdev']:.0f}"])  # fmt: skip
        print(table(rows, ["ms", "n", "median", "min", "max", "stdev"]))
        mib = args.size_mib
        print(table([[k, f"{v:.1f}", f"{mib / v:.2f}"] for k, v in cp.items()],
                    [f"{mib} MiB", "seconds", "MiB/s"]))  # fmt: skip
        warm_gap = summarize(samples["warm"])["median"] - summarize(samples["plain"])["median"]
        print(f"warm exec - plain ssh (medians): {warm_gap * MS:+.0f} ms (target <= 20 ms)")
        write_json(args.json, {"env": env_info, "exec": samples, "cp": cp, "size_mib": mib})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
