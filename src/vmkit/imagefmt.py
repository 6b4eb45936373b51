"""Telling a qcow2 image from a raw one by its first bytes: the one place that knows how."""

from __future__ import annotations

from pathlib import Path

QCOW2_MAGIC = b"QFI\xfb"


def sniff_format(path: Path) -> str:
    """ "qcow2" when the file starts with qcow2's magic, else "raw" (OSError if unreadable)."""
    with path.open("rb") as f:
        return "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"
