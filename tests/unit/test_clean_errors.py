"""Inputs that used to end in a traceback or a hang get a clean error naming the problem,
exit code 2 (issue 15, item 12). Through the real CLI, as a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LONG = "x" * 300  # one path component longer than NAME_MAX (255)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {
        "non_utf8": tmp_path / "bad.yaml",
        "long": tmp_path / "long.yaml",
        "binary": tmp_path / "bin.yaml",
        "fifo": tmp_path / "fifo",
    }
    out["non_utf8"].write_bytes(b"name: a\n\xff\xfe: 1\n")
    out["long"].write_text(f"name: a\nboot: {{kernel: /tmp/{LONG}}}\n")
    out["binary"].write_text(
        "name: a\nboot: {kernel: /k}\ncloud_init:\n  user_data: {x: !!binary /w==}\n"
    )
    os.mkfifo(out["fifo"])
    return out


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("spec", "validate", "{non_utf8}"), "not UTF-8"),
        (("spec", "validate", "{long}"), "boot.kernel"),
        (("create", "-f", "{long}"), "boot.kernel"),
        (("disk", "info", f"/tmp/{LONG}"), "too long"),
        (("disk", "create", f"/tmp/{LONG}.img", "--size", "1M"), "too long"),
        (("kernel", "inspect", f"/tmp/{LONG}"), "too long"),
        (("kernel", "extract", f"/tmp/{LONG}", "out"), "too long"),
        (("spec", "validate", "{binary}"), "!!binary"),
        (("create", "-f", "{binary}"), "!!binary"),
        (("spec", "validate", "/dev/zero"), "not a regular file"),
        (("spec", "validate", "{fifo}"), "not a regular file"),
        (("image", "pull", "http://127.0.0.1:9/x.img", "--checksum", "sha256:ab\n"), "--checksum"),
    ],
)
def test_clean_error_not_a_traceback(cli, files: dict[str, Path], args, text: str) -> None:
    args = tuple(a.format(**{k: str(v) for k, v in files.items()}) for a in args)
    proc = cli(*args, timeout=30)  # a hang (the FIFO) fails here
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    assert text in proc.stderr, proc.stderr
    assert cli.json("ls") == []  # nothing half-created


def test_an_unusable_home_is_a_clean_error(cli, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cli.env["VMKIT_HOME"] = str(tmp_path / "file" / "home")
    proc = cli("ls")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "VMKIT_HOME" in proc.stderr
