"""Small helpers shared by the CLI modules (rendering, the Host)."""

from __future__ import annotations

from typing import Any

import click

from vmkit.cli_direct import json_text, progress_text, ready_text
from vmkit.cli_ls import table as table  # one table renderer, click-free

READ_HELP = "Print JSON for scripts."


def host() -> Any:
    from vmkit.machine import Host

    return Host(progress=build_progress)


def build_progress(message: str) -> None:
    """One line per step; on a terminal, download percentages rewrite their own line."""
    import sys

    text, end = progress_text(message, sys.stderr.isatty())
    click.echo(text, err=True, nl=end)


def echo_json(obj: Any) -> None:
    click.echo(json_text(obj))


def report_ready(status: Any, seconds: float, as_json: bool) -> None:
    """What `start --wait`, `wait` and `run` print once the guest is ready."""
    click.echo(ready_text(status, seconds, as_json))
