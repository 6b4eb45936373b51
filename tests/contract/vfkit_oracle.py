"""vfkit's own command-line parser as the contract oracle: `vfkit-parse` is vfkit's
`pkg/config` + `pkg/cmdline` (+ the `--restful-uri` check of `pkg/rest`) compiled for Linux
(../shared/tools/vfkit-parse, see its README). Tests feed it vmkit's argv and require vfkit's
parse to succeed and to re-emit the devices vmkit meant.

Found through $VMKIT_VFKIT_PARSE, else beside the checkout (../shared/tools/vfkit-parse/);
built from the source there into ~/.cache/vmkit/test-tools when only the source and a Go
toolchain exist; otherwise the tests using it skip, saying why.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "tools" / "vfkit-parse"


def _go() -> str | None:
    for cand in (shutil.which("go"), "/usr/lib/go-1.19/bin/go", "/usr/lib/go/bin/go"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


@functools.cache
def oracle_path() -> tuple[str | None, str]:
    """(path, why-not): the vfkit-parse binary, or None and the reason it is missing."""
    env = os.environ.get("VMKIT_VFKIT_PARSE")
    if env:
        if os.access(env, os.X_OK):
            return env, ""
        return None, f"$VMKIT_VFKIT_PARSE={env} is not an executable file"
    binary = SHARED / "vfkit-parse"
    if os.access(binary, os.X_OK):
        return str(binary), ""
    src = SHARED / "src"
    if not src.is_dir():
        return None, (
            f"vfkit's parser (vfkit-parse) is not at {binary} and $VMKIT_VFKIT_PARSE is unset"
        )
    go = _go()
    if go is None:
        return None, (
            f"vfkit-parse must be built from {src}, and no Go toolchain is installed "
            "(Debian 12: apt-get install golang-1.19-go)"
        )
    out = Path.home() / ".cache" / "vmkit" / "test-tools" / "vfkit-parse"
    out.parent.mkdir(parents=True, exist_ok=True)
    build = subprocess.run(
        [go, "build", "-trimpath", "-o", str(out), "./cmd/vfkparse"],
        cwd=src,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        return None, f"building vfkit-parse from {src} failed: {build.stderr.strip()[-400:]}"
    return str(out), ""


def require_oracle() -> str:
    path, why = oracle_path()
    if path is None:
        pytest.skip(why)
    return path


def vfkit_parse(argvs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Parse each named argv with vfkit's own code; {name: {"ok", "errors", "parsed"}}."""
    binary = require_oracle()
    items = [{"name": name, "argv": argv} for name, argv in argvs.items()]
    proc = subprocess.run(
        [binary], input=json.dumps(items), capture_output=True, text=True, check=True
    )
    return {r["name"]: r for r in json.loads(proc.stdout)}


def devices(result: dict[str, Any]) -> list[str]:
    """vfkit's canonical re-emission of each `--device`, in order."""
    return [p.get("canonical", "<no canonical form>") for p in result["parsed"]
            if p["flag"] == "--device"]  # fmt: skip


def bootloader(result: dict[str, Any]) -> dict[str, Any]:
    """The bootloader struct vfkit built (vmlinuzPath, initrdPath, kernelCmdLine, ...)."""
    final = [p for p in result["parsed"] if p["flag"] == "--bootloader(final)"]
    assert len(final) == 1, result
    assert "error" not in final[0], final[0]
    out: dict[str, Any] = json.loads(final[0]["struct"])
    return out


def restful_path(result: dict[str, Any]) -> str:
    uri = [p for p in result["parsed"] if p["flag"] == "--restful-uri"]
    assert len(uri) == 1 and uri[0].get("scheme") == "unix", result
    return str(uri[0]["path"])


def assert_parses_as_rendered(result: dict[str, Any], argv: list[str]) -> None:
    """vfkit parsed every flag, and re-emits each device exactly as vmkit rendered it."""
    assert result["ok"], result["errors"]
    rendered = [argv[i + 1] for i, a in enumerate(argv) if a == "--device"]
    assert devices(result) == rendered
