"""The `vmkit` console script: `--version`, and a warm `exec` on a VM's open SSH connection
(access.fastexec), run without loading the CLI (click and the library); everything else,
and any exec fastexec declines, runs the CLI."""

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
    from vmkit.cli import main as cli

    cli()
