"""The `vmkit` console script: `--version`, `ls [--json]` (cli_ls) and a warm `exec` on a
VM's open SSH connection (access.fastexec) run without loading the CLI (click); everything
else, and anything those decline, runs the CLI."""

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
    if sys.argv[1:2] == ["ls"]:
        from vmkit.cli_ls import fast

        if fast(sys.argv[1:]):
            return
    from vmkit.cli import main as cli

    cli()
