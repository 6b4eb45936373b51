"""`vmkit pool`: warm pools of restored, paused copies of a snapshot (machine/pool.py)."""

from __future__ import annotations

import time

import click

from vmkit.cli_common import READ_HELP, build_progress, echo_json, host, table


@click.group(name="pool")
def pool_group() -> None:
    """Warm pools: paused copies of a snapshot, handed out by `vmkit run --pool`."""


@pool_group.command(name="create")
@click.argument("name")
@click.option("--from", "snapshot", required=True, help="The snapshot to restore copies of.")
@click.option("--size", type=int, required=True, help="How many paused copies to keep.")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def pool_create(name: str, snapshot: str, size: int, as_json: bool) -> None:
    """Make a pool and fill it (restores SIZE copies of SNAPSHOT, pausing each)."""
    from vmkit.machine.pool import Pools

    pools = Pools(host())
    t0 = time.monotonic()
    pools.create(name, snapshot, size)
    made = pools.fill(name, None if as_json else build_progress)
    seconds = round(time.monotonic() - t0, 3)
    if as_json:
        echo_json({**pools.get(name).to_json(), "made": made, "seconds": seconds})
    else:
        click.echo(f"pool {name}: {len(made)} copies of {snapshot} ready in {seconds:.2f}s")


@pool_group.command(name="fill")
@click.argument("name")
def pool_fill(name: str) -> None:
    """Restore copies until the pool is full again (what a hand-out starts in the background)."""
    from vmkit.machine.pool import Pools

    made = Pools(host()).fill(name, build_progress)
    click.echo(f"pool {name}: {len(made)} made")


@pool_group.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def pool_ls(as_json: bool) -> None:
    """Pools with their ready copies, and whether a refill is running."""
    from vmkit.machine.pool import Pools

    pools = Pools(host())
    rows = [{**p.to_json(), "filling": pools.filling(p.name)} for p in pools.all()]
    if as_json:
        echo_json(rows)
        return
    click.echo(
        table(
            [
                [
                    r["name"],
                    r["snapshot"],
                    f"{len(r['members'])}/{r['size']}",
                    "yes" if r["filling"] else "no",
                    ", ".join(r["members"]) or "-",
                ]
                for r in rows
            ],
            ["NAME", "SNAPSHOT", "READY", "FILLING", "COPIES"],
        )
    )


@pool_group.command(name="rm")
@click.argument("names", nargs=-1, required=True)
def pool_rm(names: tuple[str, ...]) -> None:
    """Remove pools and the copies they hold (copies handed out stay)."""
    from vmkit.machine.pool import Pools

    pools = Pools(host())
    for name in names:
        members = pools.remove(name)
        click.echo(f"removed pool {name}" + (f" and {', '.join(members)}" if members else ""))
