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
