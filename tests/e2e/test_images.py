"""`vmkit image pull` against a local HTTP server (127.0.0.1) serving a real qcow2 image and
its checksum file: verified pull, wrong checksum, a transfer cut short, and its resume."""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


class Server(http.server.ThreadingHTTPServer):
    root: Path
    cut_after: int | None = None  # close the connection after this many body bytes
    ignore_range: bool = False  # answer every request with the whole file (200)
    slow: threading.Event | None = None  # hold the body back until this is set
    requests: list[tuple[str, str | None]]


class Handler(http.server.BaseHTTPRequestHandler):
    """GET with Range, ETag and If-Range (RFC 9110), as the image mirrors serve them."""

    server: Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.server.root / self.path.lstrip("/")
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range != etag:
            rng = None  # the file changed since the client's first part: send it whole
        if self.server.ignore_range:
            rng = None
        start = 0
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        cut = self.server.cut_after
        if cut is not None and path.suffix == ".qcow2":
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.server.slow is not None and path.suffix == ".qcow2":
            self.wfile.write(body[:4096])
            self.wfile.flush()
            self.server.slow.wait(60)
            body = body[4096:]
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    img = root / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
    raw = tmp_path / "fill.raw"
    raw.write_bytes(bytes(range(256)) * 8192)  # 2 MiB of data inside the image
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(img)], check=True
    )
    digest = hashlib.sha256(img.read_bytes()).hexdigest()
    (root / "SHA256SUMS").write_text(f"{digest}  tiny.qcow2\n{'0' * 64}  other.img\n")
    (root / "BAD256SUMS").write_text(f"{'1' * 64}  tiny.qcow2\n")
    srv = Server(("127.0.0.1", 0), Handler)
    srv.root = root
    srv.requests = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


def _url(srv: Server, name: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{name}"


def test_pull_verifies_caches_and_reuses(cli, server: Server, tmp_path: Path) -> None:
    cli.env["VMKIT_CACHE"] = str(tmp_path / "cache")
    url = _url(server, "tiny.qcow2")
    got = cli.json("image", "pull", url, "--checksum", _url(server, "SHA256SUMS"))
    path = Path(got["path"])
    assert path.read_bytes() == (server.root / "tiny.qcow2").read_bytes()
    assert got["algo"] == "sha256" and path.parent.name.startswith("sha256-")
    assert [i["url"] for i in cli.json("image", "ls")] == [url]
    n = len(server.requests)
    again = cli.json("image", "pull", url, "--checksum", _url(server, "SHA256SUMS"))
    assert again["path"] == got["path"]  # from the cache: only the checksum file fetched again
    assert [r for r, _ in server.requests[n:]] == ["/SHA256SUMS"]
    raw = Path(cli.ok("image", "path", "tiny.qcow2", "--raw").stdout.strip())
    assert raw.suffix == ".raw" and raw.read_bytes() == bytes(range(256)) * 8192
    cli.ok("image", "rm", "tiny.qcow2")
    assert cli.json("image", "ls") == [] and not path.exists()


def test_wrong_checksum_never_enters_the_cache(cli, server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cli.env["VMKIT_CACHE"] = str(cache)
    proc = cli(
        "image", "pull", _url(server, "tiny.qcow2"), "--checksum", _url(server, "BAD256SUMS")
    )
    assert proc.returncode == 1 and "checksum mismatch" in proc.stderr
    assert cli.json("image", "ls") == []
    assert not list((cache / "images").glob("sha256-*"))
    assert not list((cache / "images" / "partial").iterdir())  # the bad bytes are gone
    assert not list((cache / "images").glob("sha256-*"))
    proc = cli("image", "pull", _url(server, "tiny.qcow2"))
    assert proc.returncode == 2 and "no checksum" in proc.stderr


def test_cut_transfer_is_kept_aside_and_resumed(cli, server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cli.env["VMKIT_CACHE"] = str(cache)
    url, sums = _url(server, "tiny.qcow2"), _url(server, "SHA256SUMS")
    server.cut_after = 300_000
    proc = cli("image", "pull", url, "--checksum", sums)
    assert proc.returncode == 1 and "resume" in proc.stderr
    assert cli.json("image", "ls") == []
    (part,) = (cache / "images" / "partial").glob("*.part")
    assert part.stat().st_size == 300_000
    meta = json.loads(part.with_suffix(".json").read_text())
    assert meta["url"] == url and meta["validator"].startswith('"')  # the ETag, for If-Range

    server.cut_after = None
    got = cli.json("image", "pull", url, "--checksum", sums)
    assert ("/tiny.qcow2", "bytes=300000-") in server.requests  # only the rest was fetched
    assert Path(got["path"]).read_bytes() == (server.root / "tiny.qcow2").read_bytes()
    assert not list((cache / "images" / "partial").iterdir())


def test_catalog_and_bad_names(cli, tmp_path: Path) -> None:
    cli.env["VMKIT_CACHE"] = str(tmp_path / "cache")
    proc = cli("image", "pull", "nosuch-os")
    assert proc.returncode == 2 and "debian-12" in proc.stderr
    proc = cli("image", "pull", "debian-12", "--arch", "riscv64")
    assert proc.returncode == 2 and "no riscv64 image" in proc.stderr
    proc = cli("image", "rm", "nothing")
    assert proc.returncode == 2


def _rewrite_image(server: Server, tmp_path: Path) -> bytes:
    """A new release of tiny.qcow2 at the same URL, with its new checksum published."""
    raw = tmp_path / "fill2.raw"
    raw.write_bytes(bytes(reversed(range(256))) * 12288)  # 3 MiB: another header too
    img = server.root / "tiny.qcow2"
    img.unlink()
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(img)], check=True
    )
    data = img.read_bytes()
    (server.root / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  tiny.qcow2\n")
    return data


def test_resume_after_the_file_changed_starts_over(cli, server: Server, tmp_path: Path) -> None:
    """If-Range: a part file from the old release is never glued to bytes of the new one."""
    cli.env["VMKIT_CACHE"] = str(tmp_path / "cache")
    url, sums = _url(server, "tiny.qcow2"), _url(server, "SHA256SUMS")
    server.cut_after = 300_000
    assert cli("image", "pull", url, "--checksum", sums).returncode == 1
    server.cut_after = None
    new = _rewrite_image(server, tmp_path)
    got = cli.json("image", "pull", url, "--checksum", sums)
    assert server.requests[-1] == ("/tiny.qcow2", "bytes=300000-")  # it asked to resume...
    assert Path(got["path"]).read_bytes() == new  # ...and took the whole new file instead


def test_server_that_ignores_range_gets_a_clean_restart(cli, server: Server, tmp_path) -> None:
    cli.env["VMKIT_CACHE"] = str(tmp_path / "cache")
    url, sums = _url(server, "tiny.qcow2"), _url(server, "SHA256SUMS")
    server.cut_after = 300_000
    assert cli("image", "pull", url, "--checksum", sums).returncode == 1
    server.cut_after, server.ignore_range = None, True
    got = cli.json("image", "pull", url, "--checksum", sums)
    assert Path(got["path"]).read_bytes() == (server.root / "tiny.qcow2").read_bytes()


def test_a_second_pull_of_the_same_url_is_refused_while_one_runs(
    cli, server: Server, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cli.env["VMKIT_CACHE"] = str(cache)
    url, sums = _url(server, "tiny.qcow2"), _url(server, "SHA256SUMS")
    server.slow = threading.Event()
    first = subprocess.Popen(
        [sys.executable, "-m", "vmkit.cli", "image", "pull", url, "--checksum", sums, "--json"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list((cache / "images" / "partial").glob("*.part")):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = cli("image", "pull", url, "--checksum", sums)
        assert second.returncode == 1 and "another vmkit process" in second.stderr
    finally:
        server.slow.set()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert Path(json.loads(out)["path"]).is_file()


def test_rm_refuses_an_image_a_vm_overlay_reads(cli, guest, server: Server, tmp_path) -> None:
    cli.env["VMKIT_CACHE"] = str(tmp_path / "cache")
    url, sums = _url(server, "tiny.qcow2"), _url(server, "SHA256SUMS")
    path = cli.json("image", "pull", url, "--checksum", sums)["path"]
    boot = ("--kernel", str(guest.kernel), "--initrd", str(guest.initrd))
    # --clone-disk takes the pulled image's name as well as a file
    made = cli.ok("create", "ov", *boot, "--clone-disk", "tiny.qcow2", "--accel", "tcg").stdout
    assert f"of {path}" in made
    if "qcow2-overlay" not in made:
        pytest.skip(f"the store's filesystem reflinks, so no overlay was made: {made}")
    assert cli.json("image", "ls")[0]["read_by"] == ["vm ov"]
    proc = cli("image", "rm", "tiny.qcow2")
    assert proc.returncode == 1 and "overlays of vm ov" in proc.stderr, proc.stderr
    assert "--force" in proc.stderr and Path(path).is_file()
    cli.ok("rm", "ov")
    assert cli.json("image", "ls")[0]["read_by"] == []
    cli.ok("image", "rm", "tiny.qcow2")
    assert not Path(path).exists()


def test_a_cached_image_is_checked_against_what_was_asked_every_time(
    cli, server: Server, tmp_path: Path
) -> None:
    """Issue 15 item 10: once cached, any --checksum (another file's hash, md5:abc, an
    unreachable checksum URL) used to exit 0 with "(sha256 verified)"."""
    cli.env["VMKIT_CACHE"] = str(tmp_path / "cache")
    url, sums = _url(server, "tiny.qcow2"), _url(server, "SHA256SUMS")
    got = cli.json("image", "pull", url, "--checksum", sums)
    digest = got["digest"]
    cli.ok("image", "pull", url, "--checksum", f"sha256:{digest}")
    cli.ok("image", "pull", url)  # nothing asked: the file is re-hashed against its record
    for checksum, code, text in (
        ("sha256:" + "0" * 64, 1, "does not match"),
        (_url(server, "BAD256SUMS"), 1, "does not match"),
        ("http://127.0.0.1:9/SUMS", 1, "cannot get the checksum file"),
        ("md5:abc", 2, "--checksum"),
        (f"sha256:{digest}\n", 2, "--checksum"),
        ("sha256:abc", 2, "wrong length"),
    ):
        proc = cli("image", "pull", url, "--checksum", checksum)
        assert proc.returncode == code, (checksum, proc.stdout, proc.stderr)
        assert text in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    with Path(got["path"]).open("r+b") as f:  # the cached file is damaged on disk
        f.seek(70000)
        f.write(b"rot")
    proc = cli("image", "pull", url)
    assert proc.returncode == 1 and "does not match" in proc.stderr, proc.stderr
