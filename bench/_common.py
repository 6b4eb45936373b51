"""Helpers shared by the benchmark scripts (stdlib + psutil only; no vmkit imports).

Every script works inside a `Sandbox`: one temp dir holding a private VMKIT_HOME and
VMKIT_RUNTIME_DIR, passed to the `vmkit` subprocesses through their environment (this
process's own environment is left alone). Closing the sandbox SIGKILLs every process that
belongs to it (a QEMU whose argv names a path inside it, or a process whose VMKIT_HOME is
its home) and deletes the dir, so Ctrl-C, SIGTERM or a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

MS = 1000.0


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and why."""


# ---- finding vmkit ------------------------------------------------------------------------
def vmkit_executable(explicit: str | None = None) -> str:
    """The `vmkit` console script of this interpreter, else the one on PATH.

    The one beside sys.executable is preferred because the one on PATH may be a wrapper
    (a pyenv shim costs ~50 ms per call) that is not part of vmkit.
    """
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "vmkit"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("vmkit")
    if not found:
        raise BenchError("no `vmkit` executable: `pip install -e .` first, or pass --vmkit PATH")
    return found


def path_note(vmkit: str) -> str | None:
    """Say so when `vmkit` on PATH is not the executable being measured."""
    on_path = shutil.which("vmkit")
    if on_path and Path(on_path).resolve() != Path(vmkit).resolve():
        return (
            f"note: `vmkit` on PATH is {on_path} (a wrapper?); measuring {vmkit}. "
            f"Pass --vmkit {on_path} to include the wrapper."
        )
    return None


# ---- signals ------------------------------------------------------------------------------
def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGINT (even if inherited as ignored), SIGTERM and SIGHUP unwind like Ctrl-C."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ignore Ctrl-C/SIGTERM/SIGHUP while cleaning up (it takes well under a few seconds)."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


# ---- the sandbox --------------------------------------------------------------------------
class Sandbox:
    def __init__(self, vmkit: str, prefix: str = "vmkit-bench-"):
        self.vmkit = vmkit
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.home = self.root / "home"
        self.rundir = self.root / "run"
        self.home.mkdir(mode=0o700)
        self.rundir.mkdir(mode=0o700)
        self.env = {
            **os.environ,
            "VMKIT_HOME": str(self.home),
            "VMKIT_RUNTIME_DIR": str(self.rundir),
        }
        self._children: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inside(self, path: str | Path) -> bool:
        return Path(path).absolute().is_relative_to(self.root)

    def track(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        self._children.append(proc)
        return proc

    def vmkit_cmd(
        self, *args: str, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `vmkit ARGS` in the sandbox and wait for it."""
        proc = self.track(
            subprocess.Popen(
                [self.vmkit, *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BenchError(f"`vmkit {' '.join(args)}` did not finish in {timeout:g}s") from None
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise BenchError(
                f"`vmkit {' '.join(args)}` exited {proc.returncode}:\n{err.strip() or out.strip()}"
            )
        return result

    def vmkit_json(self, *args: str, timeout: float = 300.0) -> Any:
        out = self.vmkit_cmd(*args, "--json", timeout=timeout).stdout
        try:
            return json.loads(out)
        except ValueError:
            raise BenchError(f"`vmkit {' '.join(args)} --json` printed no JSON:\n{out}") from None

    def owned_processes(self, exclude: Sequence[int] = ()) -> list[psutil.Process]:
        """Live processes of this sandbox: argv names a path in it, or VMKIT_HOME is its home."""
        skip = {os.getpid(), *exclude}
        root, home = str(self.root), str(self.home)
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            if p.pid in skip:
                continue
            try:
                in_argv = any(root in a for a in (p.info["cmdline"] or []))
                if in_argv or p.environ().get("VMKIT_HOME") == home:
                    found.append(p)
            except (psutil.Error, OSError):
                continue
        return found

    def close(self) -> None:
        """Kill whatever this sandbox started (children, QEMUs) and delete its dir."""
        with signals_deferred():
            for proc in self._children:
                if proc.poll() is None:
                    with contextlib.suppress(OSError):
                        proc.kill()
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    proc.wait(5)
            # Sweep until none is left: a process killed in one sweep (a pool's filler) may
            # have started another (a QEMU) after that sweep looked.
            killed = 0
            for _sweep in range(5):
                leftovers = self.owned_processes()
                if not leftovers:
                    break
                for p in leftovers:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                _gone, alive = psutil.wait_procs(leftovers, timeout=5)
                for p in alive:
                    print(f"warning: could not kill pid {p.pid}", file=sys.stderr)
                killed += len(leftovers)
            if killed:
                print(f"cleanup: killed {killed} leftover process(es)", file=sys.stderr)
            shutil.rmtree(self.root, ignore_errors=True)


# ---- measuring ----------------------------------------------------------------------------
def time_command(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds from spawn to exit of `argv` (output captured; non-zero exit is an error)."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise BenchError(f"`{' '.join(argv)}` exited {proc.returncode}:\n{err}")
    return elapsed


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """n, median, mean, min, max, stdev (0 for a single sample), in the samples' unit."""
    xs = list(samples)
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "mean": statistics.fmean(xs),
        "min": min(xs),
        "max": max(xs),
        "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
    }


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """Plain text table: first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [
            r[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---- context for the reader ---------------------------------------------------------------
def foreign_qemus(sandbox: Sandbox | None = None) -> list[int]:
    """qemu-system processes on this machine that the sandbox did not start."""
    pids = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        name = p.info["name"] or ""
        cmd = p.info["cmdline"] or []
        if not name.startswith("qemu-system") and not (cmd and "qemu-system" in cmd[0]):
            continue
        if sandbox is not None and any(str(sandbox.root) in a for a in cmd):
            continue
        pids.append(p.pid)
    return pids


def environment(vmkit: str, sandbox: Sandbox | None = None) -> dict[str, Any]:
    """Facts that decide whether numbers are comparable: host, versions, load."""
    qemu = shutil.which(f"qemu-system-{_qemu_arch()}")
    qemu_version = None
    if qemu:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10)
            qemu_version = out.stdout.splitlines()[0] if out.stdout else None
    vmkit_version = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([vmkit, "--version"], capture_output=True, text=True, timeout=30)
        vmkit_version = out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "vmkit_executable": vmkit,
        "vmkit_version": vmkit_version,
        "qemu": qemu,
        "qemu_version": qemu_version,
        "loadavg_start": os.getloadavg(),
        "other_qemu_processes_at_start": len(foreign_qemus(sandbox)),
        "interpreter_floor_ms": interpreter_floor_ms(),
    }


REFERENCE_FLOOR_MS = 11.0  # `python -c pass` on the machine issue 17's targets were set on


def interpreter_floor_ms(runs: int = 15) -> float:
    """Median ms for this interpreter to start and exit (`python -c pass`): how fast the
    machine is today, for CLI numbers, which pay it once per command."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        samples.append((time.perf_counter() - t0) * MS)
    return round(statistics.median(samples), 1)


def git_state() -> str | None:
    """`<commit>` or `<commit>-dirty` of the checkout these scripts are in."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if head and dirty else (head or None)


def busy_warning(env: dict[str, Any]) -> str | None:
    load1 = env["loadavg_start"][0]
    others = env["other_qemu_processes_at_start"]
    if load1 > 0.25 * (env["cpus"] or 1) or others:
        return (
            f"WARNING: machine not quiet (load {load1:.2f} on {env['cpus']} CPUs, "
            f"{others} other QEMU process(es)): treat these numbers as a smoke run only"
        )
    return None


def print_header(env: dict[str, Any]) -> None:
    """Who is measured, on what, and whether the machine looks quiet."""
    for line in (path_note(env["vmkit_executable"]), busy_warning(env)):
        if line:
            print(line)
    print(f"vmkit:  {env['vmkit_executable']} ({env['vmkit_version']}, checkout {env['git']})")
    floor = env["interpreter_floor_ms"]
    print(
        f"python: {env['python_executable']} ({env['python']}), starts and exits in "
        f"{floor:.1f} ms ({floor / REFERENCE_FLOOR_MS:.1f}x issue 17's reference machine)"
    )
    print(f"qemu:   {env['qemu_version']}")
    load = ", ".join(f"{x:.2f}" for x in env["loadavg_start"])
    print(f"host:   {env['cpus']} CPUs, load {load}, {env['date']}")


def _qemu_arch() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {out}")
