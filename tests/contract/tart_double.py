#!/usr/bin/env python3
"""TEST DOUBLE for Tart (cirruslabs/tart runs only on Apple silicon Macs). Never evidence
that anything works on a Mac: it only speaks Tart's documented command line (the
ArgumentParser definitions in Sources/tart/Commands/*.swift) so the driver's argv, its use
of TART_HOME and its stop/readiness logic can be exercised here.

As a program (put on PATH as `tart` by the tests) it:
- needs $TART_HOME (vmkit always sets it), and keeps VMs in $TART_HOME/vms/NAME/config.json;
- `--version` prints $TART_DOUBLE_VERSION (default 2.22.4);
- `run --help` / `set --help` print the flags of a current Tart; with $TART_DOUBLE_OLD set
  they omit `tag=` (--dir mount tags) and `--random-mac`, as an older Tart would;
- `pull REF` puts REF in $TART_HOME/cache/OCIs; `clone SRC NAME`: SRC must look like an OCI
  reference (host/repo[:tag]) or be a VM in the store (the config notes if it was cached);
  `create NAME --linux [--disk-size N]`; `set NAME [--cpu N] [--memory MB] [--random-mac]
  [--disk-size GB]`; `get NAME --format json`; `ip NAME` (an address once
  the VM has run 0.3 s); `stop NAME [--timeout S]` (SIGINT to the `run` process, then
  SIGKILL after S); `delete NAME`;
- `run NAME --no-graphics [--disk=PATH[:ro]] [--dir=PATH:[ro,]tag=T] [--rosetta=TAG]`
  checks each value as Run.swift parses it (disks must exist, dirs must be directories),
  marks the VM running (a pid file stands in for Tart's PIDLock on config.json), exits 0 on
  SIGINT (as `tart run` does once the VM stopped);
- appends every invocation, as JSON, to $TART_DOUBLE_LOG when set.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

OCI = re.compile(r"^[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+(:[\w.-]+|@sha256:[0-9a-f]{64})?$")
RUN_HELP = """USAGE: tart run <name> [--no-graphics] [--serial] [--serial-path <serial-path>]
  --disk <path[:ro]>  --rosetta <tag>  --dir <[name:]path[:options]>  (options: ro, tag=<TAG>)
  --net-bridged <interface name>  --net-softnet  --net-host  --suspendable"""
SET_HELP = """USAGE: tart set <name> [--cpu <cpu>] [--memory <memory>] [--display <display>]
  [--random-mac] [--random-serial] [--disk <path>] [--disk-size <disk-size>]"""


def fail(msg: str, code: int = 1) -> int:
    print(f"Error: {msg}", file=sys.stderr)
    return code


def vm_dir(name: str) -> Path:
    return Path(os.environ["TART_HOME"]) / "vms" / name


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((vm_dir(name) / "config.json").read_text()))


def save(name: str, config: dict[str, Any]) -> None:
    (vm_dir(name) / "config.json").write_text(json.dumps(config))


def new_config(source: str | None, disk_gb: int) -> dict[str, Any]:
    """Tart's VMConfig keys (Sources/tart/VMConfig.swift), plus the double's own."""
    return {"version": 1, "os": "linux", "arch": "arm64", "cpuCountMin": 1, "cpuCount": 4,
            "memorySizeMin": 256 << 20, "memorySize": 4096 << 20,
            "macAddress": "7e:00:00:00:00:01", "display": {"width": 1024, "height": 768},
            "source": source, "diskGB": disk_gb}  # fmt: skip


def running_pid(name: str) -> int:
    try:
        pid = int((vm_dir(name) / "run.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return 0
    return pid


def options(args: list[str]) -> tuple[list[str], dict[str, list[str]], set[str]]:
    """ArgumentParser style: `--key=value` or `--key value` for options, bare flags."""
    flags_with_values = {
        "--cpu", "--memory", "--disk-size", "--timeout", "--format", "--disk",
        "--dir", "--rosetta", "--serial-path", "--net-bridged", "--display",
    }  # fmt: skip
    positional: list[str] = []
    opts: dict[str, list[str]] = {}
    flags: set[str] = set()
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, val = arg.partition("=")
        if key in flags_with_values:
            if not eq:
                i += 1
                if i >= len(args):
                    raise ValueError(f"Missing value for '{key}'")
                val = args[i]
            opts.setdefault(key, []).append(val)
        elif arg.startswith("--"):
            flags.add(arg)
        else:
            positional.append(arg)
        i += 1
    return positional, opts, flags


def cmd_run(name: str, opts: dict[str, list[str]], flags: set[str]) -> int:
    unknown = flags - {"--no-graphics", "--net-softnet", "--net-host", "--suspendable"}
    if unknown:
        return fail(f"Unknown option '{sorted(unknown)[0]}'", 64)
    if "--no-graphics" not in flags:
        return fail("the double only runs headless (--no-graphics)", 64)
    if not (vm_dir(name) / "config.json").exists():
        return fail(f'the specified VM "{name}" does not exist')
    if running_pid(name):
        return fail(f'VM "{name}" is already running!')
    for disk in opts.get("--disk", []):
        path = disk.removesuffix(":ro")
        if not Path(path).is_file():
            return fail(f"disk {path} does not exist")
    for share in opts.get("--dir", []):
        parts = share.split(":")
        opt = parts[-1].split(",")
        if any(o == "ro" or o.startswith("tag=") for o in opt):
            parts = parts[:-1]
        path = parts[-1]
        if len(parts) > 2 or not Path(path).is_dir():
            return fail(f"invalid --dir {share!r}: {path} is not a directory")
    (vm_dir(name) / "run.pid").write_text(str(os.getpid()))
    config = load(name)
    config["started"] = time.time()
    save(name, config)
    print(f"starting VM {name} ({config['cpuCount']} CPUs, {config['memorySize'] >> 20} MB)")
    sys.stdout.flush()
    stop = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_sigint)
    while not stop:
        time.sleep(0.05)
    (vm_dir(name) / "run.pid").unlink(missing_ok=True)
    print("VM stopped")
    return 0


def main(argv: list[str]) -> int:
    if os.environ.get("TART_DOUBLE_LOG"):
        with open(os.environ["TART_DOUBLE_LOG"], "a") as f:
            f.write(json.dumps({"argv": argv, "TART_HOME": os.environ.get("TART_HOME")}) + "\n")
    if argv == ["--version"]:
        print(os.environ.get("TART_DOUBLE_VERSION", "2.22.4"))
        return 0
    if len(argv) == 2 and argv[1] == "--help":
        text = {"run": RUN_HELP, "set": SET_HELP}.get(argv[0], "")
        if os.environ.get("TART_DOUBLE_OLD"):
            text = text.replace("tag=<TAG>", "").replace("[--random-mac] ", "")
        print(text)
        return 0
    if "TART_HOME" not in os.environ:
        return fail("the double insists on TART_HOME (vmkit always sets it)")
    try:
        positional, opts, flags = options(argv)
    except ValueError as exc:
        return fail(str(exc), 64)
    if not positional:
        return fail("no command", 64)
    command, args = positional[0], positional[1:]
    if command == "clone" and len(args) == 2:
        src, name = args
        if not (OCI.match(src) or (vm_dir(src) / "config.json").exists()):
            return fail(f"{src!r} is neither a remote (OCI) image nor a local VM")
        vm_dir(name).mkdir(parents=True)
        cached = Path(os.environ["TART_HOME"]) / "cache" / "OCIs" / src.replace(":", "/")
        save(name, {**new_config(src, 20), "fromCache": cached.is_dir()})
        return 0
    if command == "pull" and len(args) == 1:
        if not OCI.match(args[0]):
            return fail(f"{args[0]!r} is not a remote (OCI) image")
        cached = Path(os.environ["TART_HOME"]) / "cache" / "OCIs" / args[0].replace(":", "/")
        cached.mkdir(parents=True)
        (cached / "manifest.json").write_text("{}")
        return 0
    if command == "create" and len(args) == 1:
        if "--linux" not in flags:
            return fail("the double creates Linux VMs only (--linux)", 64)
        vm_dir(args[0]).mkdir(parents=True)
        size = int(opts.get("--disk-size", ["50"])[0])
        save(args[0], new_config(None, size))
        return 0
    if command in ("set", "get", "ip", "stop", "delete", "run") and len(args) == 1:
        name = args[0]
        if not (vm_dir(name) / "config.json").exists():
            return fail(f'the specified VM "{name}" does not exist')
        if command == "run":
            return cmd_run(name, opts, flags)
        config = load(name)
        if command == "set":
            if "--cpu" in opts:
                config["cpuCount"] = int(opts["--cpu"][0])
            if "--memory" in opts:
                config["memorySize"] = int(opts["--memory"][0]) << 20
            if "--random-mac" in flags:
                config["macAddress"] = "7e:" + ":".join(f"{b:02x}" for b in os.urandom(5))
            if "--disk-size" in opts:
                if int(opts["--disk-size"][0]) < config["diskGB"]:
                    return fail("the disk size can only be increased")
                config["diskGB"] = int(opts["--disk-size"][0])
            save(name, config)
            return 0
        if command == "get":
            state = "running" if running_pid(name) else "stopped"
            info = {"CPU": config["cpuCount"], "Memory": config["memorySize"] >> 20,
                    "Disk": config["diskGB"], "OS": config["os"], "State": state}  # fmt: skip
            print(json.dumps(info))
            return 0
        if command == "ip":
            if not running_pid(name) or time.time() - config.get("started", 0) < 0.3:
                print("no IP address found, is your VM running?")
                return 1
            print(f"192.168.64.{int(config['macAddress'].split(':')[-1], 16) % 250 + 2}")
            return 0
        if command == "stop":
            pid = running_pid(name)
            if pid == 0:
                print(f'VM "{name}" is not running! Nothing to stop!')
                return 0
            os.kill(pid, signal.SIGINT)
            deadline = time.time() + float(opts.get("--timeout", ["30"])[0])
            while time.time() < deadline and running_pid(name):
                time.sleep(0.1)
            if running_pid(name):
                os.kill(pid, signal.SIGKILL)
            return 0
        if command == "delete":
            import shutil

            shutil.rmtree(vm_dir(name))
            return 0
    return fail(f"unknown or malformed command: {argv}", 64)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
