"""`vmkit ssh`, `vmkit exec`, `vmkit cp`: work inside a running guest (vmkit/access).

Exit codes: exec and ssh exit with the guest command's own status; 255 when vmkit could not
reach the guest (as ssh does), 124 when `--timeout` ran out, 2 for bad input.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from vmkit.cli_common import echo_json, host
from vmkit.errors import InvalidInput

TRANSPORT_HELP = "vsock | serial | network (default: the best the VM has)."
PROGRESS_MIN = 8 << 20  # show progress for transfers larger than this, on a terminal


def _connection(name: str, user: str | None, transport: str | None, extra: list[str]) -> Any:
    from vmkit.access.ssh import connect

    conn = connect(host().get(name), user, transport, extra)
    conn.ensure_master()
    return conn


@click.command()
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--user", "-u", help="Guest user (default: root, or the cloud-init user).")
@click.option("--transport", help=TRANSPORT_HELP)
@click.option("--ssh-option", "-o", "ssh_options", multiple=True, help="Passed to ssh as -o.")
@click.option("--print", "print_argv", is_flag=True, help="Print the ssh argv, do not run it.")
def ssh(
    name: str,
    command: tuple[str, ...],
    user: str | None,
    transport: str | None,
    ssh_options: tuple[str, ...],
    print_argv: bool,
) -> None:
    """A login shell in the guest (with a TTY), or `-- CMD...` run there."""
    extra = [w for opt in ssh_options for w in ("-o", opt)]
    conn = _connection(name, user, transport, extra)
    flags = ("-t",) if not command and sys.stdin.isatty() else ()
    argv = conn.argv(list(command) or None, flags=flags, master="no")
    if print_argv:
        import shlex

        click.echo(shlex.join(argv))
        return
    sys.stdout.flush()
    os.execv(argv[0], argv)  # noqa: S606 (becomes ssh: its TTY, its exit status)


@click.command(name="exec")
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--user", "-u", help="Guest user (default: root, or the cloud-init user).")
@click.option("--workdir", "-w", help="Directory to run in (exit 126 if it is missing).")
@click.option("--env", "-e", "env", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("--timeout", type=float, help="Seconds; then TERM, then KILL (exit 124).")
@click.option("-i", "--interactive", is_flag=True, help="Pass stdin to the command.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal.")
@click.option("--transport", help=TRANSPORT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print exit code, output and durations.")
def exec_(
    name: str,
    command: tuple[str, ...],
    user: str | None,
    workdir: str | None,
    env: tuple[str, ...],
    timeout: float | None,
    interactive: bool,
    tty: bool,
    transport: str | None,
    as_json: bool,
) -> None:
    """Run CMD in the guest: output streamed, its exit status is vmkit's."""
    from vmkit.access import execute

    if timeout is not None and timeout <= 0:
        raise InvalidInput("--timeout: give a positive number of seconds")
    variables = execute.parse_env(env)
    t0 = time.monotonic()
    conn = _connection(name, user, transport, [])
    t_conn = time.monotonic() - t0
    if as_json:
        result = execute.run(
            conn,
            list(command),
            input=sys.stdin.buffer.read() if interactive else None,
            timeout=timeout,
            env=variables,
            workdir=workdir,
        )
        echo_json({**result.to_json(), "connect_seconds": round(t_conn, 3)})
        sys.exit(result.returncode)
    stream = execute.ExecStream(
        conn,
        list(command),
        env=variables,
        workdir=workdir,
        tty=tty,
        stdin=None if interactive or tty else subprocess.DEVNULL,
        stdout=None,
        stderr=None,
    )

    def forward(signum: int, _frame: Any) -> None:
        stream.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    sys.exit(stream.wait(timeout))


def _split(arg: str) -> tuple[str | None, str]:
    """`NAME:PATH` -> (NAME, PATH); a plain or ./-prefixed local path -> (None, PATH)."""
    if arg.startswith(("/", "./", "../", "~")) or ":" not in arg:
        return None, arg
    vm, _, path = arg.partition(":")
    return vm, path


def _progress() -> Any:
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def show(done: int, total: int | None) -> None:
        now = time.monotonic()
        if (total or 0) < PROGRESS_MIN and done < PROGRESS_MIN:
            return
        if now - last[0] < 0.2 and done != total:
            return
        last[0] = now
        of = f" / {total / 2**20:.1f}" if total else ""
        click.echo(f"\r  {done / 2**20:.1f}{of} MiB", err=True, nl=done == total)

    return show


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--transport", help=TRANSPORT_HELP)
def cp(src: str, dst: str, transport: str | None) -> None:
    """Copy files or folders: `vmkit cp FILE NAME:/dir`, `vmkit cp NAME:/etc/hosts .`."""
    src_vm, src_path = _split(src)
    dst_vm, dst_path = _split(dst)
    if (src_vm is None) == (dst_vm is None):
        raise InvalidInput(
            "cp: exactly one of SRC and DST must be NAME:PATH in a VM (the other a host path)"
        )
    from vmkit.access.copy import copy_in, copy_out

    if dst_vm is not None:
        conn = _connection(dst_vm, None, transport, [])
        copy_in(conn, Path(src_path).expanduser(), dst_path, _progress())
    else:
        assert src_vm is not None
        conn = _connection(src_vm, None, transport, [])
        copy_out(conn, src_path, Path(dst_path).expanduser(), _progress())
