"""store.py: atomic writes, private modes, create/remove, and locks that hold across processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmkit import store as store_mod
from vmkit.errors import NameInUse, NotFound, VmkitError
from vmkit.paths import ensure_private_dir
from vmkit.store import (
    MAX_SOCKET_PATH,
    LockBusy,
    Store,
    atomic_write_bytes,
    atomic_write_json,
    file_lock,
    read_json,
)

RECORD = {"spec": {"name": "vm1", "boot": {"kernel": "/k"}}, "driver": "qemu", "format": 1}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(vmkit_dirs: tuple[Path, Path]) -> Store:
    return Store()


@pytest.fixture
def vm(store: Store) -> str:
    store.create("vm1", RECORD)
    return "vm1"


# ---- atomic writes -------------------------------------------------------------------------


def test_atomic_write_json_writes_sorted_json_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert read_json(target) == {"a": [1, 2], "b": 1}
    assert target.read_text().endswith("\n")
    assert _mode(target) == 0o600
    assert os.listdir(tmp_path) == ["x.json"]


def test_atomic_write_replaces_a_loose_mode_with_0600(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_text("{}")
    target.chmod(0o644)
    atomic_write_json(target, {"n": 1})
    assert _mode(target) == 0o600


def test_failed_rename_leaves_target_unchanged_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "runtime.json"
    atomic_write_json(target, {"version": 1})
    before = target.read_bytes()

    def boom(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(target, {"version": 2, "big": "x" * 10_000})
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["runtime.json"]


def test_failed_fsync_leaves_no_file_when_target_did_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="Input/output"):
        atomic_write_bytes(tmp_path / "new.bin", b"data")
    assert os.listdir(tmp_path) == []


def test_interrupt_during_write_is_cleaned_up_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "runtime.json"
    target.write_text('{"old": true}')

    def interrupted(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(target, {"old": False})
    assert read_json(target) == {"old": True}
    assert os.listdir(tmp_path) == ["runtime.json"]


# ---- layout and modes ----------------------------------------------------------------------


def test_create_makes_private_dirs_and_files(store: Store, vmkit_dirs: tuple[Path, Path]) -> None:
    home, _ = vmkit_dirs
    vm_dir = store.create("vm1", RECORD)
    assert vm_dir == home / "vms" / "vm1"
    assert _mode(home) == 0o700
    assert _mode(home / "vms") == 0o700
    assert _mode(vm_dir) == 0o700
    assert _mode(vm_dir / "machine.json") == 0o600
    assert _mode(vm_dir / "lock") == 0o600
    assert store.load_machine("vm1") == RECORD


def test_save_runtime_is_0600_and_reads_back(store: Store, vm: str) -> None:
    store.save_runtime(vm, {"pid": 42})
    assert store.load_runtime(vm) == {"pid": 42}
    assert _mode(store.vm_dir(vm) / "runtime.json") == 0o600


def test_home_with_loose_mode_is_left_alone_and_gets_a_private_subfolder(
    vmkit_dirs: tuple[Path, Path],
) -> None:
    home, _ = vmkit_dirs
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    store = Store()
    store.ensure()
    assert _mode(home) == 0o755
    assert store.home == home / f"vmkit-{os.getuid()}" and _mode(store.home) == 0o700


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads fd paths from /proc")
def test_create_syncs_the_record_then_its_name(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder's entries are on disk before it takes its name, and the name after: a host
    crash cannot leave a created VM as a half-made folder that gc would roll back."""
    store.ensure()
    synced: list[tuple[str, set[str]]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        names = set(os.listdir(path)) if os.path.isdir(path) else set()
        synced.append((path, names))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    final = store.create("vm1", RECORD)
    paths = [p for p, _ in synced]
    assert paths[-1] == str(store.vms_dir) and "vm1" in synced[-1][1]
    staging = [names for p, names in synced[:-1] if os.path.basename(p).startswith(".creating-")]
    assert staging and staging[-1] == {"lock", "machine.json"}
    assert "/.machine.json." in paths[0]  # the record's data, synced before its rename
    assert read_json(final / "machine.json") == RECORD


def test_create_of_existing_name_raises_and_leaves_no_staging_dir(store: Store, vm: str) -> None:
    with pytest.raises(NameInUse, match="already exists"):
        store.create(vm, {"other": True})
    assert store.load_machine(vm) == RECORD
    assert store.leftovers() == []
    assert not any(p.name.startswith(".creating-") for p in store.vms_dir.iterdir())


def test_create_that_fails_midway_leaves_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(path: Path, obj: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_mod, "atomic_write_json", boom)
    with pytest.raises(OSError):
        store.create("vm2", RECORD)
    assert not store.exists("vm2")
    assert list(store.vms_dir.iterdir()) == []


def test_names_lists_only_complete_vms(store: Store, vm: str) -> None:
    (store.vms_dir / ".creating-x-123").mkdir()
    (store.vms_dir / "half").mkdir()  # no machine.json
    store.create("another", RECORD)
    assert store.names() == ["another", "vm1"]


def test_names_of_a_fresh_home_is_empty(store: Store) -> None:
    assert store.names() == []
    assert store.leftovers() == []


def test_remove_drops_the_record_and_leaves_no_trash(store: Store, vm: str) -> None:
    store.remove(vm)
    assert not store.exists(vm)
    assert list(store.vms_dir.iterdir()) == []


def test_leftovers_finds_creating_and_trash_dirs(store: Store) -> None:
    store.ensure()
    (store.vms_dir / ".creating-a-1").mkdir()
    (store.vms_dir / ".trash-b-2-3").mkdir()
    (store.vms_dir / ".other").mkdir()
    assert [p.name for p in store.leftovers()] == [".creating-a-1", ".trash-b-2-3"]


def test_load_runtime_missing_is_empty_and_corrupt_is_flagged(store: Store, vm: str) -> None:
    assert store.load_runtime(vm) == {}
    (store.vm_dir(vm) / "runtime.json").write_text('{"pid": 4')
    assert store.load_runtime(vm) == {"corrupt": True}


def test_an_unreadable_runtime_record_from_before_the_boot_reads_as_none(
    store: Store, vm: str
) -> None:
    """runtime.json is written unsynced, so a host crash may leave it empty or torn; what it
    described (a VMM of that boot) is gone, so it reads as no record, not a broken VM."""
    from vmkit.process import boot_time

    path = store.vm_dir(vm) / "runtime.json"
    path.write_text("")
    before_boot = boot_time() - 60
    os.utime(path, (before_boot, before_boot))
    assert store.load_runtime(vm) == {}
    path.write_text('{"pid": 4')  # written now: a real fault, reported as such
    assert store.load_runtime(vm) == {"corrupt": True}


def test_runtime_records_are_not_synced_and_machine_records_are(
    store: Store, vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    store.save_runtime(vm, {"pid": 1})
    assert synced == [] and store.load_runtime(vm) == {"pid": 1}
    assert _mode(store.vm_dir(vm) / "runtime.json") == 0o600
    store.save_machine(vm, RECORD)
    assert len(synced) == 2  # the file's data, then its folder


def test_load_machine_of_unknown_vm_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="no VM named 'ghost'"):
        store.load_machine("ghost")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".", "..", "", "UP"])
def test_vm_dir_refuses_names_that_are_not_safe_path_components(store: Store, name: str) -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        store.vm_dir(name)


# ---- ensure_private_dir --------------------------------------------------------------------


def test_ensure_private_dir_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("")
    with pytest.raises((VmkitError, FileExistsError)):
        ensure_private_dir(path)


def test_ensure_private_dir_refuses_a_symlink_to_a_dir(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(VmkitError, match="not a directory owned by you"):
        ensure_private_dir(link)


# ---- sockets -------------------------------------------------------------------------------


def test_socket_path_is_short_private_and_stable(
    store: Store, vmkit_dirs: tuple[Path, Path]
) -> None:
    _, run = vmkit_dirs
    path = store.socket_path("vm1", "qmp")
    assert len(str(path)) < MAX_SOCKET_PATH
    assert path.parent == run
    assert _mode(run) == 0o700
    assert path.name.endswith(".qmp")
    assert store.socket_path("vm1", "qmp") == path


def test_socket_path_differs_per_name_kind_and_home(
    tmp_path: Path, vmkit_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Store().socket_path("vm1", "qmp")
    assert Store().socket_path("vm2", "qmp") != first
    assert Store().socket_path("vm1", "con") != first
    monkeypatch.setenv("VMKIT_HOME", str(tmp_path / "home2"))
    assert Store().socket_path("vm1", "qmp") != first


def test_socket_path_with_a_long_name_stays_short(store: Store) -> None:
    assert len(str(store.socket_path("n" * 63, "con"))) < MAX_SOCKET_PATH


def test_socket_path_in_a_too_long_runtime_dir_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VMKIT_RUNTIME_DIR", str(tmp_path / ("r" * 100)))
    with pytest.raises(VmkitError, match="too long"):
        Store().socket_path("vm1", "qmp")


# ---- locks ---------------------------------------------------------------------------------

_COUNTER = """
import sys, time
from pathlib import Path
from vmkit.store import Store

home, name, go, n = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
store = Store(home)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
for _ in range(n):
    with store.vm_lock(name, timeout=60):
        runtime = store.load_runtime(name)
        runtime["count"] = runtime.get("count", 0) + 1
        store.save_runtime(name, runtime)
"""

_HOLDER = """
import sys
from pathlib import Path
from vmkit.store import file_lock

with file_lock(Path(sys.argv[1]), 10, "test lock"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding an exclusive file_lock on tmp_path/held.lock until stdin closes."""
    path = tmp_path / "held.lock"
    proc = _python(_HOLDER, str(path))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "locked\n", proc.stderr.read() if proc.stderr else line
    yield path, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_vm_lock_serialises_two_processes(store: Store, vm: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [_python(_COUNTER, str(store.home), vm, str(go), "200") for _ in range(2)]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    go.touch()
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert store.load_runtime(vm) == {"count": 400}


def test_file_lock_with_timeout_0_is_busy_while_another_process_holds_it(
    holder: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, proc = holder
    started = time.monotonic()
    with pytest.raises(LockBusy, match="test lock is busy"), file_lock(path, 0, "test lock"):
        pass
    assert time.monotonic() - started < 1.0
    proc.communicate("", timeout=10)
    with file_lock(path, 0, "test lock"):
        pass


def test_file_lock_gives_up_after_its_timeout(holder: tuple[Path, subprocess.Popen[str]]) -> None:
    path, _proc = holder
    started = time.monotonic()
    with pytest.raises(LockBusy), file_lock(path, 0.3, "test lock"):
        pass
    assert 0.3 <= time.monotonic() - started < 5


def test_file_lock_waits_for_the_holder_to_release(
    holder: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, proc = holder
    assert proc.stdin is not None
    release = threading.Timer(0.3, proc.stdin.close)
    release.start()
    started = time.monotonic()
    try:
        with file_lock(path, 10, "test lock"):
            waited = time.monotonic() - started
    finally:
        release.cancel()
    assert waited >= 0.25


def test_file_lock_without_create_on_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with (
        pytest.raises(NotFound, match="thing does not exist"),
        file_lock(tmp_path / "missing", 0, "thing", create=False),
    ):
        pass
    assert not (tmp_path / "missing").exists()


def test_vm_lock_of_unknown_vm_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="no VM named 'ghost'"), store.vm_lock("ghost"):
        pass


def _wait_in_vm_lock(
    store: Store, name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Thread, threading.Event, list[BaseException | str]]:
    """Start a thread blocked in store.vm_lock(name); return it once it is polling the lock."""
    waiting = threading.Event()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        waiting.set()
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            with store.vm_lock(name, timeout=10):
                outcome.append("acquired")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert waiting.wait(5), "vm_lock never started waiting"
    return thread, waiting, outcome


def _hold(path: Path) -> int:
    import fcntl

    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_vm_lock_on_a_vm_removed_while_waiting_is_not_found(
    store: Store, vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fd = _hold(store.vm_dir(vm) / "lock")
    try:
        thread, _, outcome = _wait_in_vm_lock(store, vm, monkeypatch)
        store.remove(vm)
    finally:
        os.close(fd)
    thread.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], NotFound)
    assert "removed while waiting" in str(outcome[0])


def test_vm_lock_on_a_vm_recreated_while_waiting_is_not_found(
    store: Store, vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fd = _hold(store.vm_dir(vm) / "lock")
    try:
        thread, _, outcome = _wait_in_vm_lock(store, vm, monkeypatch)
        store.remove(vm)
        store.create(vm, RECORD)
    finally:
        os.close(fd)
    thread.join(10)
    assert isinstance(outcome[0], NotFound)


def test_vm_lock_acquired_after_release_when_vm_still_exists(
    store: Store, vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fd = _hold(store.vm_dir(vm) / "lock")
    try:
        thread, _, outcome = _wait_in_vm_lock(store, vm, monkeypatch)
    finally:
        os.close(fd)
    thread.join(10)
    assert outcome == ["acquired"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a dir to another uid")
def test_runtime_dir_owned_by_another_uid_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmkit.paths import runtime_dir

    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    os.chown(run, 65534, 65534)
    monkeypatch.setenv("VMKIT_RUNTIME_DIR", str(run))
    with pytest.raises(VmkitError, match=r"VMKIT_RUNTIME_DIR=.* others control"):
        runtime_dir()
