"""access.fastexec's pieces that must agree with the full path: where the store is, how a
command is quoted and announced, which invocations it takes. (Its real runs against a booted
guest: tests/e2e/test_fastexec.py.)"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from vmkit import paths
from vmkit.access import execute, fastexec
from vmkit.errors import VmkitError


def _both(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None]
) -> tuple[str | None, str | None]:
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    try:
        full: str | None = str(paths.data_home())
    except VmkitError:
        full = None
    return fastexec.data_home(), full


def test_it_finds_the_store_where_vmkit_paths_does(monkeypatch, tmp_path: Path) -> None:
    private = tmp_path / "mine"
    private.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: vmkit nests a private folder inside
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # writable by others, not sticky: refused by both
    a_file = tmp_path / "file"
    a_file.write_text("")
    cases: list[dict[str, str | None]] = [
        {"VMKIT_HOME": None, "XDG_DATA_HOME": None},
        {"VMKIT_HOME": None, "XDG_DATA_HOME": str(tmp_path / "xdg")},
        {"VMKIT_HOME": None, "XDG_DATA_HOME": "  "},
        {"VMKIT_HOME": str(tmp_path / "new")},
        {"VMKIT_HOME": str(private)},
        {"VMKIT_HOME": str(shared)},
        {"VMKIT_HOME": str(open_dir)},
        {"VMKIT_HOME": str(a_file)},
        {"VMKIT_HOME": "~/vk-test-home"},
    ]
    for env in cases:
        fast, full = _both(monkeypatch, env)
        assert fast == full, env


@pytest.mark.parametrize(
    "argv", [["true"], ["sh", "-c", 'echo "it\'s" $HOME; exit 3'], ["a b", "", "'", "$(x)", "é"]]
)
def test_the_remote_line_is_the_full_paths(argv: list[str]) -> None:
    assert fastexec.script(argv) == execute.remote_script(argv)
    words = shlex.split(fastexec.script(argv).split("; exec ", 1)[1])
    assert words == argv


@pytest.mark.parametrize(
    ("args", "taken"),
    [
        (["box", "--", "true"], ("box", ["true"])),
        (["box", "ls", "-l"], ("box", ["ls", "-l"])),
        (["box", "--", "--weird"], ("box", ["--weird"])),
        (["box", "-i", "--", "cat"], None),  # options: the full path
        (["box", "--json", "--", "true"], None),
        (["--user", "x", "box", "true"], None),
        (["box", "--"], None),
        (["box"], None),
        (["../x", "--", "true"], None),  # never a path outside the store
        (["Box", "--", "true"], None),
        ([".box", "--", "true"], None),
    ],
)
def test_it_takes_only_a_plain_exec(args: list[str], taken: object) -> None:
    assert fastexec._parse(args) == taken


def test_a_recipe_it_did_not_write_privately_is_ignored(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VMKIT_HOME", str(tmp_path / "home"))
    vm_dir = tmp_path / "home" / "vms" / "box"
    vm_dir.mkdir(parents=True)
    os.chmod(tmp_path / "home", 0o700)
    control = tmp_path / "c.sock"
    import socket

    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(str(control))
        srv.listen()
        fastexec.remember(vm_dir, os.getpid(), ["/bin/echo", "x"], control)
        recipe = vm_dir / fastexec.RECIPE
        assert recipe.stat().st_mode & 0o777 == 0o600
        assert fastexec._recipe("box") == (os.getpid(), ["/bin/echo", "x"])
        recipe.chmod(0o644)
        assert fastexec._recipe("box") is None
        recipe.chmod(0o600)
        fastexec.remember(vm_dir, 1, ["/bin/echo", "x"], control)  # pid 1 is not this VMM
        raw = recipe.read_bytes().split(b"\0")
        raw[2] = b"1"  # a start time that is not pid 1's
        recipe.write_bytes(b"\0".join(raw))
        assert fastexec._recipe("box") is None
        fastexec.forget(vm_dir)
        assert not recipe.exists() and fastexec._recipe("box") is None
    fastexec.remember(vm_dir, os.getpid(), ["/bin/echo", "x"], control)
    assert fastexec._recipe("box") is None  # nothing listens on the master's socket


@pytest.mark.parametrize(
    ("stream", "want"),
    [
        (b"VMKIT_PID 42\nerr\n", (42, b"err\n")),
        (b"VMKIT_PID 42\n", (42, b"")),
        (b"ssh: connect to host: refused\n", (None, b"ssh: connect to host: refused\n")),
        (b"VMKIT_PID x1\nmore", (None, b"VMKIT_PID x1\nmore")),  # not a pid: passed on as is
        (b"", (None, b"")),
    ],
)
def test_the_pid_line_is_taken_off_stderr_one_byte_at_a_time_too(stream, want) -> None:
    """Both paths (fastexec.run and execute.ExecStream) read stderr with this."""
    import io

    for chunk in (4096, 1):  # all at once, and a byte per read: the caller pumps the rest
        src = io.BytesIO(stream)
        pid, head = fastexec.read_pid_line(lambda _n, c=chunk: src.read(c))
        assert (pid, head + src.read()) == want
