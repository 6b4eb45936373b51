"""Wall time of short `vmkit` commands, next to the bare interpreter as the floor.

Measured (each round runs every command once, in turn, so drift hits all alike):
  python -c pass     the floor: the same interpreter starting and exiting
  vmkit --version    the CLI's own start-up
  vmkit ls           with 20 VM records (created with `vmkit create vm-NN`, never started)
                     in VMKIT_HOME, and again found as a user's store is (no VMKIT_HOME:
                     `$XDG_DATA_HOME/vmkit`), which is how most people run vmkit
  vmkit ls           with 2 of them running, with --with-running (a second phase)

Then `python -X importtime` of `import vmkit.cli` and of the `vmkit ls` code path, top 10
by cumulative time, to show where start-up goes.

    python bench/cli_latency.py --runs 15 --with-running --json bench/results/cli.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
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
    time_command,
    vmkit_executable,
    write_json,
)

TARGETS_MS = {"vmkit --version": 30.0, "vmkit ls": 60.0}  # issue 17, item 5
IMPORT_CODE = "import vmkit.cli"
# what the console script runs (`vmkit ls` is answered before click loads: entry.py)
LS_CODE = "import sys; sys.argv = ['vmkit', 'ls']; from vmkit.entry import main; main()"


def target_ms(label: str) -> float | None:
    return next((ms for cmd, ms in TARGETS_MS.items() if label.startswith(cmd)), None)


def measure(
    commands: dict[str, list[str]],
    env: dict[str, str],
    runs: int,
    warmup: int,
    envs: dict[str, dict[str, str]] | None = None,
) -> dict[str, list[float]]:
    """Each command `runs` times, in turn; `envs` gives some of them their own environment."""
    samples: dict[str, list[float]] = {k: [] for k in commands}
    for i in range(warmup + runs):
        for label, argv in commands.items():
            t = time_command(argv, (envs or {}).get(label, env))
            if i >= warmup:
                samples[label].append(t)
    return samples


# ---- -X importtime ------------------------------------------------------------------------
@dataclass
class Import:
    name: str
    depth: int
    self_us: int
    cumulative_us: int


def parse_importtime(stderr: str) -> list[list[Import]]:
    """Top-level import trees, in order; each list ends with its root (depth 0)."""
    trees: list[list[Import]] = []
    current: list[Import] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, cumulative, name = line.split("|", 2)  # "import time: SELF | CUM | <indent>NAME"
        name = name.rstrip()
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        self_us = int(head.split(":", 1)[1])
        current.append(Import(name.strip(), depth, self_us, int(cumulative)))
        if depth == 0:
            trees.append(current)
            current = []
    return trees


def importtime(code: str, env: dict[str, str]) -> tuple[int, list[Import]]:
    """(interpreter start-up µs, imports made by `code`) under -X importtime."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise BenchError(f"python -X importtime -c {code!r} failed:\n{proc.stderr[-2000:]}")
    trees = parse_importtime(proc.stderr)
    first = next((i for i, t in enumerate(trees) if t[-1].name.startswith("vmkit")), len(trees))
    startup = sum(t[-1].cumulative_us for t in trees[:first])
    return startup, [imp for t in trees[first:] for imp in t]


def profile_ls(sb: Sandbox, what: str) -> tuple[str, int, list[Import]]:
    return (f"python -X importtime, the `vmkit ls` path ({what})", *importtime(LS_CODE, sb.env))


def print_importtime(title: str, startup_us: int, imports: list[Import], top: int) -> None:
    total = sum(i.cumulative_us for i in imports if i.depth == 0)
    print(f"\n{title}: {total / MS:.1f} ms of imports ({len(imports)} modules)")
    print(f"  (interpreter start-up before it, site and .pth files: {startup_us / MS:.1f} ms)")
    rows = [
        [("  " * i.depth) + i.name, f"{i.cumulative_us / MS:.1f}", f"{i.self_us / MS:.1f}"]
        for i in sorted(imports, key=lambda i: i.cumulative_us, reverse=True)[:top]
    ]
    print(table(rows, [f"top {top} by cumulative (indent = depth)", "cum ms", "self ms"]))


# ---- report -------------------------------------------------------------------------------
def report(samples: dict[str, list[float]], floor_key: str) -> dict[str, Any]:
    sums = {k: summarize(v) for k, v in samples.items()}
    floor = sums[floor_key]["median"]
    rows = []
    results: dict[str, Any] = {}
    for label, s in sums.items():
        target = target_ms(label)
        over = target is not None and s["median"] * MS > target
        verdict = "(floor)" if label == floor_key else ("OVER" if over else "ok")
        verdict += "" if target is None else f" (<= {target:g})"
        rows.append(
            [
                label,
                s["n"],
                f"{s['median'] * MS:.0f}",
                f"{s['min'] * MS:.0f}",
                f"{s['max'] * MS:.0f}",
                f"{s['stdev'] * MS:.0f}",
                "" if label == floor_key else f"{(s['median'] - floor) * MS:+.0f}",
                verdict,
            ]
        )
        results[label] = {**s, "above_floor": s["median"] - floor, "target_met": not over}
    headers = ["ms", "n", "median", "min", "max", "stdev", "vs floor", "target"]
    print(table(rows, headers))
    return results


def create_vms(sb: Sandbox, count: int) -> list[str]:
    names = [f"vm-{i:02d}" for i in range(1, count + 1)]
    for name in names:
        sb.vmkit_cmd("create", name)
    return names


def default_home_env(sb: Sandbox) -> dict[str, str]:
    """The sandbox's store found as a user's is, without VMKIT_HOME: at
    `$XDG_DATA_HOME/vmkit` (a link to it), which is where vmkit looks by default."""
    xdg = sb.root / "xdg"
    xdg.mkdir(mode=0o700, exist_ok=True)
    link = xdg / "vmkit"
    if not link.exists():
        link.symlink_to(sb.home)
    env = {k: v for k, v in sb.env.items() if k != "VMKIT_HOME"}
    return {**env, "XDG_DATA_HOME": str(xdg)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=15, help="timed rounds (default 15)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--vms", type=int, default=20, help="VM records for `ls` (default 20)")
    ap.add_argument("--with-running", action="store_true", help="also `ls` with 2 VMs running")
    ap.add_argument("--top", type=int, default=10, help="imports to list (default 10)")
    ap.add_argument("--no-importtime", action="store_true", help="skip the import profile")
    ap.add_argument("--json", metavar="FILE", help="write samples and summary as JSON")
    ap.add_argument("--vmkit", metavar="PATH", help="vmkit executable (default: beside python)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.vms < (2 if args.with_running else 0):
        ap.error("--runs >= 1, --warmup >= 0, and --vms >= 2 with --with-running")

    install_signal_handlers()
    vmkit = vmkit_executable(args.vmkit)
    out: dict[str, Any] = {"benchmark": "cli_latency"}
    with Sandbox(vmkit) as sb:
        env = environment(vmkit, sb)
        out["environment"] = env
        print_header(env)
        names = create_vms(sb, args.vms)
        floor = "python -c pass"
        ls_label = f"vmkit ls ({args.vms} created)"
        default_label = f"vmkit ls ({args.vms} created, default data folder)"
        commands = {
            floor: [sys.executable, "-c", "pass"],
            "vmkit --version": [vmkit, "--version"],
            ls_label: [vmkit, "ls"],
            default_label: [vmkit, "ls"],
        }
        samples = measure(
            commands, sb.env, args.runs, args.warmup, {default_label: default_home_env(sb)}
        )
        profiles = [] if args.no_importtime else [profile_ls(sb, f"{args.vms} created")]
        if args.with_running:
            for name in names[:2]:
                sb.vmkit_json("start", name, "--wait")
            running = {floor: commands[floor], f"vmkit ls ({args.vms}, 2 running)": [vmkit, "ls"]}
            more = measure(running, sb.env, args.runs, args.warmup)
            samples[floor] += more.pop(floor)
            samples.update(more)
            if not args.no_importtime:
                profiles.append(profile_ls(sb, f"{args.vms}, 2 running"))
        print(f"\nwarm-up rounds {args.warmup}, timed rounds {args.runs}")
        out["samples_seconds"] = samples
        out["summary"] = report(samples, floor)
        out["target_ms"] = TARGETS_MS

        if not args.no_importtime:
            cli = ('python -X importtime -c "import vmkit.cli"', *importtime(IMPORT_CODE, sb.env))
            out["importtime"] = {}
            for title, startup, imports in [cli, *profiles]:
                print_importtime(title, startup, imports, args.top)
                out["importtime"][title] = {
                    "startup_us": startup,
                    "imports": [i.__dict__ for i in imports],
                }
            print("\n(-X importtime inflates absolute times; compare modules with each other.)")
        if args.with_running:
            sb.vmkit_cmd("stop", *names[:2], timeout=120)
    env["loadavg_end"] = os.getloadavg()
    write_json(args.json, out)
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
