"""`vmkit run --pool NAME [--json]` without click: a warm pool's hand-out is meant to take
milliseconds, and loading the CLI (click, the Machine facade, the driver abilities) would
cost more than the hand-out itself. The console script (entry.py) calls `run`; the click
command renders through the same `ready_text`, and makes the clear errors for every other
form of `vmkit run`.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # not typing's: this path is timed in milliseconds
if TYPE_CHECKING:
    from vmkit.errors import VmkitError
    from vmkit.machine.status import Status


def ready_text(status: Status, seconds: float, as_json: bool) -> str:
    """What `start --wait`, `wait` and `run` print once the guest is ready."""
    if as_json:
        import json

        obj = {**status.to_json(), "seconds_to_ready": round(seconds, 3)}
        return json.dumps(obj, indent=2, default=str)
    return f"{status.name} is READY in {seconds:.2f}s (ip {status.ip or '-'}, pid {status.pid})"


def parse(args: list[str]) -> tuple[str, bool] | None:
    """(pool, --json) for exactly `--pool NAME` / `--pool=NAME` and an optional `--json`,
    in any order; None for anything else (the CLI parses and reports it)."""
    pool, as_json, rest = None, False, list(args)
    while rest:
        word = rest.pop(0)
        if word == "--json" and not as_json:
            as_json = True
        elif word == "--pool" and pool is None and rest:
            pool = rest.pop(0)
        elif word.startswith("--pool=") and pool is None:
            pool = word.removeprefix("--pool=")
        else:
            return None
    if not pool or pool.startswith("-"):
        return None
    return pool, as_json


def run(args: list[str]) -> int | None:
    """`vmkit run ARGS`: the exit code once done, or None (nothing done) when ARGS are not a
    plain hand-out."""
    parsed = parse(args)
    if parsed is None:
        return None
    name, as_json = parsed
    t0 = time.monotonic()
    from vmkit.errors import VmkitError, from_os_error

    try:
        from vmkit.machine.pool import hand_out, start_filler
        from vmkit.store import Store

        store = Store()
        status = hand_out(store, name).status()
        sys.stdout.write(ready_text(status, time.monotonic() - t0, as_json) + "\n")
        sys.stdout.flush()  # the answer first: the filler's start-up competes for the CPU
        start_filler(store, name, caller_exits=True)
    except VmkitError as exc:
        return _fail(exc)
    except OSError as exc:
        return _fail(from_os_error(exc))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return 0


def _fail(exc: VmkitError) -> int:
    sys.stderr.write(f"error: {exc}\n")
    return exc.exit_code
