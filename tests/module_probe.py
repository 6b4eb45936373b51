"""The console script's entry point (entry.main) run in a child process that then reports
which of the named modules it loaded: a fast path must not load what it does not use. The
command's stdout is untouched; the report is stderr's last line."""

from __future__ import annotations

import json
import sys

PROBE = """
import json, sys
import vmkit.entry


def leave(code):  # the real one ends the process before the probe can look
    raise SystemExit(code)


vmkit.entry.leave = leave
watched = json.loads(sys.argv[2])
sys.argv = ["vmkit", *json.loads(sys.argv[1])]
code = 0
try:
    vmkit.entry.main()
except SystemExit as exc:
    code = exc.code or 0
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + json.dumps(sorted(m for m in watched if m in sys.modules)) + "\\n")
sys.exit(code)
"""

# what neither a pool's hand-out nor a plain restore uses (costs in docs/benchmarks.md)
NOT_ON_FAST_PATHS = ("click", "dataclasses", "inspect", "tempfile", "gzip", "psutil")


def argv(*args: str, watched: tuple[str, ...] = NOT_ON_FAST_PATHS) -> list[str]:
    return [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(watched)]


def loaded(stderr: str) -> list[str]:
    """The watched modules the command loaded, from the probe's stderr."""
    last = stderr.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith("MODULES "), stderr
    modules: list[str] = json.loads(last.removeprefix("MODULES "))
    return modules
