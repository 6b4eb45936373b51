"""Commands the console script (entry.py) answers without click, because their point is to
be fast and loading the CLI (click, and with it `inspect` and `typing`) would cost more than
vmkit's own work in them: `vmkit run NAME [--driver D] [--json]` (the tiny guest), a
pool's hand-out, `vmkit run --pool NAME [--json]`, and `vmkit restore SNAPSHOT [--name
NAME] [--json]`. Each takes only those plain forms; for anything else it returns None
having done nothing, and the click command parses, reports and runs it. The click
commands render through the same functions here, and write errors as `_fail` does (cli.py).
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # not typing's: these paths are timed in milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

    from vmkit.errors import VmkitError
    from vmkit.machine.status import Status


def ready_text(status: Status, seconds: float, as_json: bool) -> str:
    """What `start --wait`, `wait` and `run` print once the guest is ready."""
    if as_json:
        return json_text({**status.to_json(), "seconds_to_ready": round(seconds, 3)})
    return f"{status.name} is READY in {seconds:.2f}s (ip {status.ip or '-'}, pid {status.pid})"


def restored_text(status: Status, snapshot: str, seconds: float, as_json: bool) -> str:
    """What `vmkit restore` prints."""
    seconds = round(seconds, 3)
    if as_json:
        return json_text({**status.to_json(), "restored_from": snapshot, "seconds": seconds})
    return f"{status.name}: {status.state} in {seconds:.2f}s (restored from {snapshot})"


def progress_text(message: str, tty: bool) -> tuple[str, bool]:
    """(text, end the line?) for one progress message on stderr: one line per step; on a
    terminal, download percentages rewrite their own line."""
    live = tty and message.startswith("downloading ") and message.endswith(" MiB")
    done = live and message.split()[-2].split("/")[0] == message.split()[-2].split("/")[1]
    return (f"\r  {message}" if tty else f"  {message}"), not live or done


def json_text(obj: object) -> str:
    """JSON as every `--json` prints it."""
    import json

    return json.dumps(obj, indent=2, default=str)


def parse(args: list[str], valued: tuple[str, ...], flags: tuple[str, ...]) -> dict[str, str]:
    """Long options only, each at most once: `valued` take a value (`--opt V`, `--opt=V`),
    `flags` none; positional words under "1", "2", ... Raises ValueError for anything else
    (a short option, an unknown one, a value that looks like an option), for click to
    parse and report."""
    out: dict[str, str] = {}
    rest = list(args)
    positional = 0
    while rest:
        word = rest.pop(0)
        name, eq, value = word.partition("=")
        if name in valued:
            if not eq:
                if not rest:
                    raise ValueError(word)
                value = rest.pop(0)
            if not value or value.startswith("-"):
                raise ValueError(word)
        elif word in flags:
            name, value = word, ""
        elif word.startswith("-") or word == "":
            raise ValueError(word)
        else:
            positional += 1
            name, value = str(positional), word
        if name in out:
            raise ValueError(word)
        out[name] = value
    return out


def run(args: list[str]) -> int | None:
    """`vmkit run ARGS` when ARGS are a VM's NAME (the tiny guest, every other default),
    with an optional `--driver D`, or `--pool NAME`; each with an optional `--json`."""
    try:
        opts = parse(args, ("--pool", "--driver"), ("--json",))
    except ValueError:
        return None
    as_json = "--json" in opts
    if "--pool" in opts and set(opts) <= {"--pool", "--json"}:
        pool = opts["--pool"]
        return _run(lambda: _hand_out(pool, as_json))
    if "1" in opts and set(opts) <= {"1", "--driver", "--json"}:
        spec: dict[str, object] = {"name": opts["1"], "boot": {"kind": "tiny"}}
        if "--driver" in opts:
            from vmkit.drivers import names

            if opts["--driver"] not in ("auto", *names()):
                return None  # click's Choice names the ones there are
            spec["driver"] = opts["--driver"]
        return _run(lambda: _boot(spec, as_json))
    return None


def _boot(fields: dict[str, object], as_json: bool) -> None:
    """What the click command does for `vmkit run NAME [--driver D]` (cli_create.run and
    build_spec, whose spec these `fields` are)."""
    from pathlib import Path

    from vmkit.machine.host import Host
    from vmkit.spec import spec_from_dict

    t0 = time.monotonic()
    spec = spec_from_dict(fields, base_dir=Path.cwd())
    status = Host(progress=progress).run(spec)
    _say(ready_text(status, time.monotonic() - t0, as_json))


def _hand_out(pool: str, as_json: bool) -> None:
    from vmkit.machine.pool import hand_out_then_refill
    from vmkit.store import Store

    t0 = time.monotonic()

    def answer(status: Status) -> None:
        _say(ready_text(status, time.monotonic() - t0, as_json))

    warning = hand_out_then_refill(Store(), pool, answer, caller_exits=True)
    if warning is not None:
        sys.stderr.write(f"warning: {warning}\n")


def restore(args: list[str]) -> int | None:
    """`vmkit restore ARGS` when ARGS are a snapshot, an optional `--name NAME` and an
    optional `--json` (the click command's defaults for the rest)."""
    try:
        opts = parse(args, ("--name",), ("--json",))
    except ValueError:
        return None
    if set(opts) - {"1", "--name", "--json"} or "1" not in opts:
        return None
    snapshot, as_json = opts["1"], "--json" in opts

    def restore() -> None:
        from vmkit.machine.host import Host

        t0 = time.monotonic()
        machine = Host(progress=progress).restore(snapshot, opts.get("--name"))
        status = machine.status()
        _say(restored_text(status, snapshot, time.monotonic() - t0, as_json))

    return _run(restore)


def progress(message: str) -> None:
    text, end = progress_text(message, sys.stderr.isatty())
    sys.stderr.write(text + ("\n" if end else ""))
    sys.stderr.flush()


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _run(command: Callable[[], None]) -> int:
    """Run a command as the click group does (cli._Group.invoke): its exit code, with a
    VmkitError or OSError written as `error: ...` and never a traceback."""
    from vmkit.errors import VmkitError, from_os_error

    try:
        command()
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
