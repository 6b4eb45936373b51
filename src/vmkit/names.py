"""VM name rules, kept apart from the spec so path-handling code need not import pydantic."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,62}\Z")
NAME_HELP = (
    "1-63 characters: lowercase letters, digits, '-', '_' and '.', not starting with '.' or '-'"
)


def validate_name(name: str) -> str:
    """A VM name safe to use as a path component; ValueError says what is allowed."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a valid name; use {NAME_HELP}")
    return name
