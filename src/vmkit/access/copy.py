"""`vmkit cp`: files and folders in and out of the guest, as a tar stream over the VM's SSH
connection (no scp/sftp server needed in the guest: its `tar` and `sh` do).

Nothing partial ever appears at the destination: each side unpacks into a fresh temporary
directory beside the destination and renames the result into place only when the whole
stream arrived. A destination that is an existing directory receives SRC inside it (as cp
and scp do); an existing file is replaced; an existing directory is never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

from vmkit.access.ssh import AccessError, Connection
from vmkit.errors import InvalidInput, VmkitError

Progress = Callable[[int, int | None], None]  # bytes so far, total if known
MISSING, CONFLICT = 3, 4
_GUEST_ERRORS = {MISSING, CONFLICT}


class _Counter:
    """A write-only file that counts what passes through it into `inner`."""

    def __init__(self, inner: IO[bytes], total: int | None, progress: Progress | None):
        self.inner, self.total, self.progress, self.done = inner, total, progress, 0

    def write(self, data: bytes) -> int:
        self.inner.write(data)
        self.done += len(data)
        if self.progress:
            self.progress(self.done, self.total)
        return len(data)

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.done += len(data)
        if self.progress:
            self.progress(self.done, self.total)
        return data


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.lstat().st_size for p in path.rglob("*"))
    return path.lstat().st_size


def _drain(f: IO[bytes] | None, into: list[bytes]) -> None:
    if f is not None:
        into.append(f.read())


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


IN_SCRIPT = """d={dst}; n={name}; kind={kind}
case "$d" in */) t="$d$n" ;; *) if [ -d "$d" ]; then t="$d/$n"; else t="$d"; fi ;; esac
p=$(dirname "$t")
[ -d "$p" ] || {{ echo "vmkit-cp: no such directory in the guest: $p" >&2; exit 3; }}
if [ -d "$t" ]; then echo "vmkit-cp: $t is an existing directory in the guest" >&2; exit 4; fi
if [ $kind = dir ] && [ -e "$t" ]; then
    echo "vmkit-cp: $t exists in the guest and is not a directory" >&2; exit 4
fi
tmp=$(mktemp -d "$p/.vmkit-cp.XXXXXX") || exit 5
trap 'rm -rf "$tmp"' EXIT
tar -x -f - -C "$tmp" || exit 5
mv -f "$tmp/$n" "$t" || exit 5
"""

OUT_SCRIPT = """s={src}
if [ ! -e "$s" ] && [ ! -L "$s" ]; then
    echo "vmkit-cp: no such file or directory in the guest: $s" >&2; exit 3
fi
cd "$(dirname "$s")" || exit 3
exec tar -c -f - "./$(basename "$s")"
"""


def _guest_failure(conn: Connection, rc: int, stderr: bytes, what: str) -> VmkitError:
    text = stderr.decode(errors="replace").strip()
    lines = [line.removeprefix("vmkit-cp: ") for line in text.splitlines() if line.strip()]
    if rc in _GUEST_ERRORS and lines:
        return InvalidInput(f"cp: {lines[-1]}")
    if rc == 255:
        return AccessError(
            f"cp: the connection to VM {conn.name!r} broke during {what} "
            f"({lines[-1] if lines else 'no message'}); nothing was written"
        )
    return VmkitError(
        f"cp: {what} failed in the guest (exit {rc}): "
        f"{lines[-1] if lines else 'no message'}; nothing was written"
    )


def copy_in(conn: Connection, src: Path, dst: str, progress: Progress | None = None) -> None:
    """Host `src` (file or folder) to guest path `dst`."""
    if not src.exists() and not src.is_symlink():
        raise InvalidInput(f"cp: {src}: no such file or directory on the host")
    if not dst:
        raise InvalidInput("cp: the guest path is empty")
    name = src.absolute().name
    kind = "dir" if src.is_dir() and not src.is_symlink() else "file"
    script = IN_SCRIPT.format(dst=shlex.quote(dst), name=shlex.quote(name), kind=kind)
    proc = subprocess.Popen(
        conn.argv(["sh", "-c", shlex.quote(script)], flags=("-T",), master="no"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    err: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(proc.stderr, err))
    reader.start()
    assert proc.stdin is not None
    try:
        counter = _Counter(proc.stdin, _size(src), progress)
        with tarfile.open(fileobj=counter, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            tar.add(str(src), arcname=name, recursive=True, filter=_as_root)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the guest side ended early: its exit status says why
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    rc = proc.wait()
    reader.join()
    if rc != 0:
        raise _guest_failure(conn, rc, b"".join(err), "the copy into the guest")


def _keep_mode(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's `data` filter (no absolute paths, no escaping links or devices), but with
    the member's permission bits kept, as cp -p does."""
    safe = tarfile.data_filter(member, dest)
    if member.isfile() or member.isdir():
        return safe.replace(mode=member.mode & 0o7777, deep=False)
    return safe


def copy_out(conn: Connection, src: str, dst: Path, progress: Progress | None = None) -> Path:
    """Guest path `src` to host `dst`; returns the path written."""
    if not src:
        raise InvalidInput("cp: the guest path is empty")
    name = PurePosixPath(src.rstrip("/") or "/").name
    if not name or name in (".", ".."):
        raise InvalidInput(f"cp: {src!r}: name a file or folder in the guest, not {name or '/'}")
    final = dst / name if dst.is_dir() else dst
    parent = final.absolute().parent
    if not parent.is_dir():
        raise InvalidInput(f"cp: {parent}: no such directory on the host")
    tmp = Path(tempfile.mkdtemp(prefix=".vmkit-cp.", dir=parent))
    try:
        script = OUT_SCRIPT.format(src=shlex.quote(src))
        proc = subprocess.Popen(
            conn.argv(["sh", "-c", shlex.quote(script)], flags=("-T",), master="no"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        err: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(proc.stderr, err))
        reader.start()
        assert proc.stdout is not None
        failure: Exception | None = None
        try:
            counter: Any = _Counter(proc.stdout, None, progress)
            with tarfile.open(fileobj=counter, mode="r|") as tar:
                tar.extractall(tmp, filter=_keep_mode)  # noqa: S202 (the filter checks)
        except (tarfile.TarError, OSError) as exc:
            failure = exc
            proc.stdout.read()
        rc = proc.wait()
        reader.join()
        if rc != 0:
            raise _guest_failure(conn, rc, b"".join(err), "the copy out of the guest")
        if failure is not None:
            raise VmkitError(
                f"cp: the stream from the guest was not readable ({failure}); nothing was written"
            )
        got = tmp / name
        if final.is_dir() and not final.is_symlink():
            raise InvalidInput(f"cp: {final} is an existing directory on the host")
        if got.is_dir() and (final.exists() or final.is_symlink()):
            raise InvalidInput(f"cp: {final} exists on the host and is not a directory")
        os.replace(got, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
