"""Values placed in a VMM's or helper's comma/`=`-separated option strings: escape or refuse.

One place for every argv builder, so a path such as `/tmp/pub,source=/tmp/secret` can never
add an option. Each VMM's own rule, checked against the real binary (tests/e2e/test_optstr_real.py):

- QEMU (`-drive`, `-blockdev`, `-chardev`, `-netdev`, `-trace` ...): a comma inside a value
  is written twice (`,,`); `=` and quotes are plain characters after the first `=`.
- Cloud Hypervisor (`--api-socket path=...`): its parser splits on commas outside double
  quotes, so a value with `,` `=` `[` `]` is wrapped in quotes; a value holding `"` is refused.
- virtiofsd (`-o source=...`): the C virtiofsd unescapes `\\x` and the Rust one has no
  escaping at all, so a `,` or `\\` is refused.

Newline, carriage return and NUL are refused everywhere: they are never needed in a path
and make logs and error messages lie.
"""

from __future__ import annotations

from pathlib import Path

from vmkit.errors import InvalidInput

CONTROL = {"\n": "a newline", "\r": "a carriage return", "\0": "a NUL byte"}
PLAIN_FIX = "rename or move the file"
VIRTIOFSD = {",": "a comma", "\\": "a backslash"}
VIRTIOFSD_WHO = "virtiofsd's -o option syntax"
VIRTIOFSD_FIX = "share a folder whose path has neither (e.g. a symlink to it)"


def problem(text: str, chars: dict[str, str], who: str, fix: str) -> str | None:
    """Why `text` cannot go where `who` reads it, or None."""
    for char, label in chars.items():
        if char in text:
            return f"{text!r} contains {label}, which {who} cannot take; {fix}"
    return None


def _refuse(field: str, text: str, chars: dict[str, str], who: str, fix: str) -> None:
    why = problem(text, chars, who, fix)
    if why is not None:
        raise InvalidInput(f"{field}: {why}")


def check_plain(field: str, raw: str | Path) -> str:
    """Any path vmkit hands a VMM: no newline, carriage return or NUL."""
    text = str(raw)
    _refuse(field, text, CONTROL, "vmkit", PLAIN_FIX)
    return text


def qemu(field: str, raw: str | Path) -> str:
    """A value inside a QEMU option string (`key=VALUE,...`): commas doubled."""
    return check_plain(field, raw).replace(",", ",,")


def cloud_hypervisor(field: str, raw: str | Path) -> str:
    """A value inside a Cloud Hypervisor option string: quoted when it must be."""
    text = check_plain(field, raw)
    _refuse(
        field,
        text,
        {'"': "a double quote"},
        "Cloud Hypervisor's option syntax",
        "rename or move the file",
    )
    return f'"{text}"' if any(c in text for c in ",=[]") else text


def virtiofsd(field: str, raw: str | Path) -> str:
    """A value for virtiofsd's `-o key=VALUE`: no comma or backslash (no portable escape)."""
    text = check_plain(field, raw)
    _refuse(field, text, VIRTIOFSD, VIRTIOFSD_WHO, VIRTIOFSD_FIX)
    return text
