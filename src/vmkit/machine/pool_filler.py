"""The pool filler's process entry point (`python -m vmkit.machine.pool_filler`): restores
copies until the pool is full, then exits (machine/pool.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from vmkit.errors import NotFound
    from vmkit.machine.host import Host
    from vmkit.machine.pool import Pools

    ap = argparse.ArgumentParser(prog="python -m vmkit.machine.pool_filler")
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--fill", required=True)
    ap.add_argument("--discard", action="append", default=[], help="a copy the pool dropped")
    args = ap.parse_args(argv)
    os.chdir(args.home)  # not the folder of the `vmkit run` that started it
    pools = Pools(Host(args.home))
    pools.discard(args.discard)
    try:
        made = pools.fill(args.fill, print)
    except NotFound:  # `vmkit pool rm` meanwhile: fill left no copy behind
        print(f"pool {args.fill} was removed; stopped filling it")
        return 0
    print(f"filled pool {args.fill}: {', '.join(made) or 'nothing to do'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
