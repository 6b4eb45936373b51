"""The user's data and cache folders by the XDG base-directory rule, as platformdirs applies
it on Linux and macOS. Here rather than platformdirs, whose import (it loads tempfile) cost
every command ~20 ms; strings only, so that access/fastexec.py needs no pathlib."""

from __future__ import annotations

import os
import sys

APP = "vmkit"


def user_dir(xdg: str, linux: str, macos: str) -> str:
    """`$<xdg>/vmkit` when the variable holds an absolute path, else the platform's folder
    (`linux` or `macos`, relative to the home) + `/vmkit`."""
    base = os.environ.get(xdg, "")
    if not os.path.isabs(base):
        home = os.environ.get("HOME", "")
        if not os.path.isabs(home):  # unset or relative: the account's own
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        base = os.path.join(home, macos if sys.platform == "darwin" else linux)
    return os.path.join(base, APP)
