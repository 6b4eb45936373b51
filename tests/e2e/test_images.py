"""`vmkit image pull` against a local HTTP server (127.0.0.1) serving a real qcow2 image and
its checksum file: verified pull, wrong checksum, a transfer cut short, and its resume."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


class Server(http.server.ThreadingHTTPServer):
    root: Path
    cut_after: int | None = None  # close the connection after this many body bytes
    requests: list[tuple[str, str | None]]


class Handler(http.server.BaseHTTPRequestHandler):
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
        start = 0
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut_after
        if cut is not None and path.suffix == ".qcow2":
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
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
    assert again["path"] == got["path"] and len(server.requests) == n  # from the cache
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
    (part,) = (cache / "images" / "partial").iterdir()
    assert part.stat().st_size == 300_000

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
