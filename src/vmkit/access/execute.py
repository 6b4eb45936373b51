"""Run a command in the guest over the VM's multiplexed SSH connection.

The remote side is one POSIX sh line: announce the shell's pid on stderr, change to the
working directory, then `exec` the command (through `env` when variables are set), so the
pid is the command's own. vmkit strips that first stderr line and uses the pid to deliver
signals (a second session on the same connection runs `kill -SIG PID`): OpenSSH forwards
no signals for a session without a terminal. With a terminal (-t) the guest's pty does it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any

from vmkit.access.fastexec import pump, quote, read_pid_line
from vmkit.access.ssh import AccessError, Connection, connect
from vmkit.errors import InvalidInput

if TYPE_CHECKING:
    from vmkit.machine import Machine

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
CD_FAILED = 126
TIMED_OUT = 124


@dataclass
class ExecResult:
    """A finished guest command."""

    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool = False
    signal: int | None = None  # a signal vmkit delivered to it

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["stdout"] = self.stdout.decode(errors="replace")
        out["stderr"] = self.stderr.decode(errors="replace")
        return out


def parse_env(items: Sequence[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not ENV_NAME.match(key):
            raise InvalidInput(f"--env: {item!r} is not NAME=VALUE (NAME: letters, digits, _)")
        env[key] = value
    return env


def remote_script(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    workdir: str | None = None,
    announce: bool = True,
) -> str:
    """The command line the guest's shell runs; every word is quoted, none interpreted."""
    if not argv:
        raise InvalidInput("exec: give the command to run after `--`")
    parts = []
    if announce:
        parts.append('echo "VMKIT_PID $$" >&2')
    if workdir:
        parts.append(f"cd -- {quote(workdir)} || exit {CD_FAILED}")
    words = [quote(a) for a in argv]
    if env:
        words = ["env", *(quote(f"{k}={v}") for k, v in env.items()), *words]
    parts.append("exec " + " ".join(words))
    return "; ".join(parts)


class ExecStream:
    """A running guest command: `.stdin`/`.stdout` are ssh's pipes when asked for, `.stderr`
    a pipe fed by a thread that drops vmkit's pid line. `wait()` gives the exit status."""

    def __init__(
        self,
        conn: Connection,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        tty: bool = False,
        stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
    ) -> None:
        self.conn = conn
        self.tty = tty
        self.pid: int | None = None
        self.signalled: int | None = None
        self._pid_seen = threading.Event()
        script = remote_script(argv, env, workdir, announce=not tty)
        flags = ("-tt",) if tty else ("-T",)
        self.proc = subprocess.Popen(
            conn.argv([script], flags=flags, master="no"),
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE if not tty else stderr,
        )
        self.stdin: IO[bytes] | None = self.proc.stdin
        self.stdout: IO[bytes] | None = self.proc.stdout
        self.stderr: IO[bytes] | None = None
        self._pump: threading.Thread | None = None
        if tty:
            self._pid_seen.set()
            self.stderr = self.proc.stderr
            return
        if stderr == subprocess.PIPE:
            r, w = os.pipe()
            self.stderr = os.fdopen(r, "rb", buffering=0)
            out_fd = w
        elif stderr is None:
            out_fd = os.dup(2)
        else:
            out_fd = os.dup(stderr if isinstance(stderr, int) else stderr.fileno())
        self._pump = threading.Thread(target=self._pump_stderr, args=(out_fd,), daemon=True)
        self._pump.start()

    def _pump_stderr(self, out_fd: int) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()

        def read(n: int) -> bytes:
            return os.read(fd, n)

        try:
            self.pid, head = read_pid_line(read)  # None: ssh's own message, command not run
            self._pid_seen.set()
            if head:
                os.write(out_fd, head)
            pump(read, out_fd)
        except OSError:
            pass
        finally:
            self._pid_seen.set()
            os.close(out_fd)

    def send_signal(self, sig: int) -> None:
        """Deliver `sig` to the guest command (by its pid, on the same connection)."""
        if self.tty:
            self.proc.send_signal(sig)  # ssh with a pty: the guest sees the hangup
            return
        self._pid_seen.wait(5)
        if self.pid is None or self.proc.poll() is not None:
            return
        self.signalled = sig
        name = signal.Signals(sig).name.removeprefix("SIG")
        subprocess.run(
            self.conn.argv(["kill", f"-{name}", str(self.pid)], flags=("-T",), master="no"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )

    def wait(self, timeout: float | None = None) -> int:
        """The command's exit status (128+N when vmkit delivered signal N and it died of it);
        TIMED_OUT after `timeout` seconds, having sent TERM, then KILL."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self._join()
            return TIMED_OUT
        self._join()
        if rc == 255 and self.signalled is not None:
            return 128 + self.signalled  # ssh reports a remote death by signal as 255
        return rc

    def _join(self) -> None:
        if self._pump is not None:
            self._pump.join(10)


def run(
    conn: Connection,
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    workdir: str | None = None,
) -> ExecResult:
    """Run to completion, collecting stdout and stderr."""
    t0 = time.monotonic()
    stream = ExecStream(
        conn,
        argv,
        env=env,
        workdir=workdir,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
    )
    out: list[bytes] = []
    err: list[bytes] = []

    def collect(f: IO[bytes] | None, into: list[bytes]) -> None:
        if f is not None:
            while chunk := f.read(65536):
                into.append(chunk)

    readers = [
        threading.Thread(target=collect, args=(stream.stdout, out), daemon=True),
        threading.Thread(target=collect, args=(stream.stderr, err), daemon=True),
    ]
    for t in readers:
        t.start()
    if input is not None and stream.stdin is not None:
        try:
            stream.stdin.write(input)
        except BrokenPipeError:
            pass
        finally:
            stream.stdin.close()
    rc = stream.wait(timeout)
    for t in readers:
        t.join(10)
    return ExecResult(
        rc,
        b"".join(out),
        b"".join(err),
        time.monotonic() - t0,
        timed_out=rc == TIMED_OUT and timeout is not None,
        signal=stream.signalled,
    )


def wait_for_ssh(machine: Machine, timeout: float) -> None:
    """Return once `true` runs in the guest over its SSH connection."""
    conn = connect(machine)
    conn.ensure_master(wait=timeout)
    result = run(conn, ["true"], timeout=timeout)
    if result.returncode != 0:
        raise AccessError(
            f"VM {machine.name!r}: `true` over SSH exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
