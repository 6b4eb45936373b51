"""Sizes as people write them: `512M`, `2GiB`, `1.5G`, `1048576`."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tib": 1 << 40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

SIZE_HELP = (
    "a byte count or a number with a unit: K/M/G/T or KiB/MiB/GiB/TiB (powers of 1024), "
    "KB/MB/GB/TB (powers of 1000), e.g. 512M or 2GiB"
)


def parse_size(value: str | int) -> int:
    """Bytes from an int or a size string; ValueError with the accepted forms otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; use {SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a size must be >= 0")
        return value
    m = _SIZE.match(str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{value!r} is not a size; use {SIZE_HELP}")
    number, unit = m.group(1), _UNITS[m.group(2).lower()]
    if "." in number:
        whole, frac = number.split(".")
        total = int(whole) * unit + (int(frac) * unit) // int(10 ** len(frac))
    else:
        total = int(number) * unit
    return total


def format_size(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"
