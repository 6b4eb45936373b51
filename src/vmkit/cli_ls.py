"""`vmkit ls`: the listing and its rendering, without click, so that the console script can
answer `vmkit ls [--json]` before loading the CLI (entry.py); the click command renders
the same text."""

from __future__ import annotations

import json

TYPE_CHECKING = False  # not typing's: importing typing costs `vmkit ls` ~5 ms
if TYPE_CHECKING:
    from collections.abc import Iterable

    from vmkit.machine.view import MachineView

HEADERS = ["NAME", "STATE", "DRIVER", "CPUS", "MEMORY", "IP", "PID"]


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [headers, *rows])


def listing(machines: Iterable[MachineView], as_json: bool) -> str:
    """Every VM with its real state, as the table or the JSON `vmkit ls` prints."""
    items = []
    for m in machines:
        st = m.status()
        if st.state == "broken":
            items.append(({"cpus": None, "memory": None}, st))
            continue
        # a live VM resized since start shows its size now (`vmkit resize`)
        resized = (m.runtime().extra.get("resized") or {}) if st.alive else {}
        items.append(({**m.spec_json, **resized}, st))
    if as_json:
        return json.dumps(
            [
                {**st.to_json(), "cpus": spec["cpus"], "memory": spec["memory"]}
                for spec, st in items
            ],
            indent=2,
            default=str,
        )
    from vmkit.units import format_size

    rows = [
        [
            st.name,
            st.state,
            st.driver,
            str(spec["cpus"] or "-"),
            format_size(int(spec["memory"])) if spec["memory"] else "-",
            st.ip or "-",
            str(st.pid or "-"),
        ]
        for spec, st in items
    ]
    return table(rows, HEADERS)


def fast(args: list[str]) -> bool:
    """`vmkit ls [--json]` from the console script: True once printed; False (nothing
    printed) on anything else or any error, for the full CLI to run and report."""
    if args not in (["ls"], ["ls", "--json"]):
        return False
    import sys

    try:
        from vmkit.machine.view import views
        from vmkit.store import Store

        text = listing(views(Store()), as_json=args == ["ls", "--json"])
    except Exception:
        return False
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `vmkit ls | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return True
