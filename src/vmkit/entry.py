"""The `vmkit` console script: `--version`, `ls [--json]` (cli_ls), a warm `exec` on a VM's
open SSH connection (access.fastexec), a plain run, a pool's hand-out and a plain restore
(cli_direct) run without loading the CLI (click); everything else, and anything those
decline, runs the CLI. A finished command leaves without the interpreter's teardown (`leave`)."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from vmkit import __version__

        sys.stdout.write(f"vmkit, version {__version__}\n")
        return
    if sys.argv[1:2] == ["exec"]:
        from vmkit.access.fastexec import run

        status = run(sys.argv[2:])
        if status is not None:
            sys.stdout.flush()
            os._exit(status)  # nothing to tear down; interpreter exit costs ms
    if sys.argv[1:2] in (["run"], ["restore"]):
        from vmkit import cli_direct

        direct = cli_direct.run if sys.argv[1] == "run" else cli_direct.restore
        code = direct(sys.argv[2:])
        if code is not None:  # None: not a form it takes, nothing done
            leave(code)
    if sys.argv[1:2] == ["ls"]:
        from vmkit.cli_ls import fast

        if fast(sys.argv[1:]):
            return
    from vmkit.cli import main as cli

    try:
        cli()
    except SystemExit as exc:
        leave(exc.code)
    leave(0)


def leave(code: object) -> None:
    """Exit with `code` once stdout and stderr are flushed, skipping the interpreter's
    teardown: freeing every module and object of the library costs a CLI command ~20 ms,
    and vmkit keeps nothing for it to do (files are written with `with`, records atomically).
    Falls back to a normal exit where something could still need it: another thread alive,
    a message as the exit code, or output that cannot be flushed (e.g. a closed pipe)."""
    threading = sys.modules.get("threading")
    if (threading is not None and threading.active_count() > 1) or not (
        code is None or isinstance(code, int)
    ):
        raise SystemExit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    os._exit(code or 0)
