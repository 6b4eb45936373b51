"""Fuzzed specs and CLI flags through the CLI entry point (in-process, click's runner): any
outcome but a traceback is fine — a clean error (exit 1/2) or success (issue 15, item 12).

Nothing boots: specs are validated and created (`create` records a VM; no VMM runs), and
every created VM is removed again. Kept fast: ~200 examples each.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmkit.cli import main

FIELDS = [
    "name", "cpus", "memory", "max_cpus", "max_memory", "boot", "disks", "networks", "shares",
    "serial_log", "readiness", "cloud_init", "driver", "accelerator", "arch", "rng", "balloon",
    "topology", "hugepages", "vsock_cid", "junk",
]  # fmt: skip
NASTY = st.sampled_from(
    ["", ",", "=", '"', "\n", "\0", "..", "/", "-1", "0", "1e999", "x" * 300, "\udcff", "${X}",
     "/tmp/a,source=/", "18091:80", "switch:", "tap:a@", "1G", "nan", "!!binary"]
)  # fmt: skip
TEXT = st.one_of(NASTY, st.text(max_size=40))
SCALAR = st.one_of(TEXT, st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.none())
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(TEXT, st.sampled_from(FIELDS)), inner, max_size=3),
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="vkfz", dir="/tmp"))
    kernel = root / "vmlinux"
    kernel.write_bytes(b"\x7fELF" + bytes(508))
    saved = {k: os.environ.get(k) for k in ("VMKIT_HOME", "VMKIT_RUNTIME_DIR", "VMKIT_CACHE")}
    os.environ.update(
        VMKIT_HOME=str(root / "home"),
        VMKIT_RUNTIME_DIR=str(root / "run"),
        VMKIT_CACHE=str(root / "cache"),
    )
    yield {"root": str(root), "kernel": str(kernel)}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def _invoke(args: list[str]) -> Any:
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"vmkit {args!r} raised:\n{tb}")
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
    return result


def _cleanup() -> None:
    CliRunner().invoke(main, ["gc"])
    home = Path(os.environ["VMKIT_HOME"])
    for vm in sorted((home / "vms").glob("*")) if (home / "vms").is_dir() else []:
        if not vm.name.startswith("."):
            CliRunner().invoke(main, ["rm", "--force", vm.name])


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.dictionaries(st.sampled_from(FIELDS), VALUE, max_size=6), as_json=st.booleans())
def test_fuzzed_specs_never_raise(env: dict[str, str], data: dict[str, Any], as_json: bool) -> None:
    data.setdefault("boot", {"kernel": env["kernel"]})
    path = Path(env["root"]) / ("spec.json" if as_json else "spec.yaml")
    try:
        text = yaml.safe_dump(data, allow_unicode=True) if not as_json else None
    except yaml.YAMLError:
        return
    if as_json:
        import json

        try:
            text = json.dumps(data)
        except ValueError:
            return
    path.write_text(text or "", errors="surrogateescape")
    _invoke(["spec", "validate", str(path)])
    _invoke(["create", "-f", str(path)])
    _cleanup()


ARG = TEXT.filter(lambda t: "\0" not in t)  # a command line cannot carry a NUL byte
FLAGS = ["--cpus", "--memory", "--initrd", "--cmdline", "--arch", "--disk", "--disk-ro",
         "--new-disk", "--clone-disk", "--net", "--ip", "--publish", "--share", "--marker",
         "--driver", "--accel", "--serial-log", "--mac"]  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.one_of(st.just("fz"), ARG),
    flags=st.lists(st.tuples(st.sampled_from(FLAGS), ARG), max_size=4),
)
def test_fuzzed_flags_never_raise(
    env: dict[str, str], name: str, flags: list[tuple[str, str]]
) -> None:
    args = ["create", name, "--kernel", env["kernel"]]
    for flag, value in flags:
        args += [flag, value]
    _invoke(args)
    _invoke(["inspect", name])
    _invoke(["ls", "--json"])
    _cleanup()
