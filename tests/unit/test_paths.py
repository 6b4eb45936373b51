"""paths.py: a shared folder given as VMKIT_HOME / VMKIT_RUNTIME_DIR gets a private
subfolder; vmkit never changes the mode of a folder it did not create (issue 15, item 9)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vmkit.errors import VmkitError
from vmkit.paths import data_home, runtime_dir
from vmkit.store import Store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mode", [0o1777, 0o755, 0o750])
def test_a_shared_home_gets_a_private_subfolder_and_keeps_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    monkeypatch.setenv("VMKIT_HOME", str(shared))
    monkeypatch.setenv("VMKIT_RUNTIME_DIR", str(tmp_path / "run"))
    store = Store()
    store.ensure()
    assert _mode(shared) == mode
    assert store.home == data_home() == shared / f"vmkit-{os.getuid()}"
    assert _mode(store.home) == 0o700


def test_a_shared_runtime_dir_gets_a_private_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("VMKIT_RUNTIME_DIR", str(shared))
    run = runtime_dir()
    assert run == shared / f"vmkit-{os.getuid()}"
    assert _mode(shared) == 0o1777 and _mode(run) == 0o700


def test_a_private_dir_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    monkeypatch.setenv("VMKIT_RUNTIME_DIR", str(mine))
    assert runtime_dir() == mine


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a dir to another uid")
@pytest.mark.parametrize("mode", [0o700, 0o777])
def test_a_runtime_dir_of_another_user_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(mode)
    os.chown(run, 65534, 65534)
    monkeypatch.setenv("VMKIT_RUNTIME_DIR", str(run))
    with pytest.raises(VmkitError, match="VMKIT_RUNTIME_DIR") as exc:
        runtime_dir()
    assert "VMKIT_HOME" not in str(exc.value)
    assert _mode(run) == mode


def test_too_long_socket_path_suggests_a_path_vmkit_may_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VMKIT_RUNTIME_DIR", str(tmp_path / ("r" * 100)))
    with pytest.raises(VmkitError, match="too long") as exc:
        Store().socket_path("vm1", "qmp")
    msg = str(exc.value)
    assert "VMKIT_RUNTIME_DIR" in msg and f"/tmp/vk-{os.getuid()}" in msg


@pytest.mark.parametrize(
    ("env", "data", "cache"),
    [
        ({}, "/home/u/.local/share/vmkit", "/home/u/.cache/vmkit"),
        (
            {"XDG_DATA_HOME": "/xdg/data", "XDG_CACHE_HOME": "/xdg/cache"},
            "/xdg/data/vmkit",
            "/xdg/cache/vmkit",
        ),
        # the base-directory spec: a relative or empty value is ignored
        (
            {"XDG_DATA_HOME": "rel/data", "XDG_CACHE_HOME": ""},
            "/home/u/.local/share/vmkit",
            "/home/u/.cache/vmkit",
        ),
    ],
)
def test_the_default_data_and_cache_folders_follow_the_xdg_rule(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], data: str, cache: str
) -> None:
    from vmkit import paths
    from vmkit.access import fastexec

    for var in ("VMKIT_HOME", "VMKIT_CACHE", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setattr(paths.sys, "platform", "linux")
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert (str(paths.data_home()), str(paths.cache_dir())) == (data, cache)
    assert fastexec.data_home() == data  # the pathlib-free `vmkit exec` finds the same store


def test_macos_folders_and_a_home_that_is_not_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    from vmkit import paths, userdirs

    for var in ("VMKIT_HOME", "VMKIT_CACHE", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", "/Users/u")
    monkeypatch.setattr(userdirs.sys, "platform", "darwin")
    assert str(paths.data_home()) == "/Users/u/Library/Application Support/vmkit"
    assert str(paths.cache_dir()) == "/Users/u/Library/Caches/vmkit"
    monkeypatch.setattr(userdirs.sys, "platform", "linux")
    monkeypatch.setenv("HOME", "relative")  # as if unset: the account's own home
    own = pwd.getpwuid(os.getuid()).pw_dir
    assert str(paths.data_home()) == os.path.join(own, ".local/share/vmkit")
