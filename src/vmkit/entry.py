"""The `vmkit` console script: `--version` answers without loading the CLI (click and the
library); everything else runs the CLI."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from vmkit import __version__

        sys.stdout.write(f"vmkit, version {__version__}\n")
        return
    from vmkit.cli import main as cli

    cli()
