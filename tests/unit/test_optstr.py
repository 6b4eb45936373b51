"""Every path-like field of every driver's argv, with `,` `=` `"` and a newline in it.

Each case must end in a clear refusal naming the field, or in an argv whose option strings,
decoded by the VMM's own rules, hold exactly the options a harmless value gives and the
value unchanged (no injected `source=`, `file=`...). The real binaries check the decoding
rules themselves in tests/e2e/test_optstr.py.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from vmkit import optstr
from vmkit.drivers.base import LaunchContext
from vmkit.drivers.cloud_hypervisor import CloudHypervisorDriver
from vmkit.drivers.qemu import QemuDriver
from vmkit.drivers.vfkit import VfkitDriver
from vmkit.errors import InvalidInput, SpecError, VmkitError
from vmkit.shares.virtiofsd import argv_for
from vmkit.spec import spec_from_dict

BAD = [",", "=", '"', "\n"]
FIELDS = [
    "disks[0].path",
    "boot.kernel",
    "boot.initrd",
    "shares[0].host",
    "shares[0].tag",
    "serial_log",
    "VMKIT_HOME",
    "VMKIT_RUNTIME_DIR",
    "networks[0].tap",
]
QEMU_OPTION_FLAGS = {
    "-blockdev", "-chardev", "-netdev", "-device", "-drive", "-trace", "-object",
    "-machine", "-name", "-sandbox", "-smp", "-mon",
}  # fmt: skip


def qemu_split(text: str) -> list[tuple[str, str]]:
    """QEMU's QemuOpts/keyval syntax: `,` separates, `,,` is a literal comma."""
    parts, cur, i = [], "", 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                cur, i = cur + ",", i + 2
                continue
            parts.append(cur)
            cur = ""
        else:
            cur += text[i]
        i += 1
    parts.append(cur)
    return [(p.partition("=")[0], p.partition("=")[2]) if "=" in p else ("", p) for p in parts]


def ch_split(text: str) -> list[tuple[str, str]]:
    """Cloud Hypervisor's OptionParser: commas outside double quotes separate; quotes go."""
    parts, cur, quoted = [], "", False
    for c in text:
        if c == '"':
            quoted = not quoted
            cur += c
        elif c == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    out = []
    for p in parts:
        key, _, val = p.partition("=")
        out.append((key, val.strip('"')))
    return out


def _kv(part: str) -> tuple[str, str]:
    key, eq, value = part.partition("=")
    return (key, value) if eq else ("", part)


def decode(driver: str, argv: list[str]) -> list[list[tuple[str, str]]]:
    out = []
    for i, arg in enumerate(argv):
        prev = argv[i - 1] if i else ""
        if driver == "qemu" and prev in QEMU_OPTION_FLAGS:
            out.append(qemu_split(arg))
        elif driver == "cloud-hypervisor" and prev.startswith("--"):
            out.append(ch_split(arg))
        elif driver == "vfkit" and prev == "--restful-uri":  # a URI: percent-encoded
            out.append([("", urllib.parse.unquote(arg))])
        elif (driver == "virtiofsd" and prev == "-o") or (
            driver == "vfkit" and prev.startswith("--")
        ):
            out.append([_kv(p) for p in arg.split(",")])
        else:
            out.append([("", arg)])
    return out


def build(driver: str, field: str, value: str, tmp: Path) -> tuple[list[str], str]:
    """(argv, the text of any API requests) for one driver with `value` in `field`."""
    home, run = tmp / "home", tmp / "run"
    vm_dir = home / "vm"
    if field == "VMKIT_HOME":
        vm_dir = tmp / f"h{value}" / "vm"
    if field == "VMKIT_RUNTIME_DIR":
        run = tmp / f"r{value}"
    data: dict[str, Any] = {
        "name": "vm1",
        "boot": {"kernel": str(tmp / "vmlinux"), "initrd": str(tmp / "initrd")},
        "disks": [{"path": str(tmp / "disk.img")}],
    }
    if driver != "vfkit":
        data["shares"] = [{"host": str(tmp / "share"), "tag": "tag"}]
    if field == "disks[0].path":
        data["disks"][0]["path"] = str(tmp / f"d{value}.img")
    elif field in ("boot.kernel", "boot.initrd"):
        data["boot"][field.split(".")[1]] = str(tmp / f"k{value}")
    elif field == "shares[0].host":
        data["shares"] = [{"host": str(tmp / f"s{value}"), "tag": "tag"}]
    elif field == "shares[0].tag":
        data["shares"] = [{"host": str(tmp / "share"), "tag": f"t{value}"}]
    elif field == "serial_log":
        data["serial_log"] = str(tmp / f"l{value}.log")
    elif field == "networks[0].tap":
        data["networks"] = [{"mode": "tap", "tap": f"t{value}"}]
    spec = spec_from_dict(data, check_files=False)
    ctx = LaunchContext(
        vm_dir=vm_dir,
        serial_log=spec.serial_log or vm_dir / "serial.log",
        events_log=vm_dir / "vmm-events.log",
        sockets={r: run / f"vm.{r}" for r in ("console", "qmp", "ctl", "api", "rest")},
        accelerator="tcg" if driver == "qemu" else "kvm",
    )
    if driver == "qemu":
        plan = QemuDriver("x86_64").plan(spec, ctx)
    elif driver == "cloud-hypervisor":
        plan = CloudHypervisorDriver().plan(spec, ctx)
    elif driver == "vfkit":
        plan = VfkitDriver().plan(spec, ctx)
    else:  # the virtiofsd sidecar of share 0
        share = spec.shares[0]
        argv = argv_for("virtiofsd", share.host, ctx.sockets["api"].with_suffix(".fs0"), False)
        return argv, ""
    return plan.argv, json.dumps([r.to_json() for r in plan.api_requests])


DRIVERS = ["qemu", "cloud-hypervisor", "virtiofsd", "vfkit"]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_no_value_can_add_an_option(driver: str, field: str, bad: str, tmp_path: Path) -> None:
    if driver == "vfkit" and bad in '="':
        pytest.skip("vfkit's own quoting of '=' and '\"' is the macOS work's (issue 15 item 1)")
    if driver == "vfkit" and field.startswith("shares"):
        pytest.skip("vfkit shares use vfkit's own syntax, not virtiofsd")
    try:
        baseline, base_api = build(driver, field, "Q_Q", tmp_path)
    except VmkitError as exc:  # e.g. a TAP on vfkit: not this test's business
        pytest.skip(f"{driver} refuses this spec anyway: {exc}")
    try:
        argv, api = build(driver, field, f"Q{bad}Q", tmp_path)
    except SpecError as exc:
        assert field.split("[")[0].split(".")[0] in str(exc), str(exc)
        return
    except InvalidInput as exc:
        name = field.replace("[0]", "").split(".")[0]
        assert name.rstrip("s") in str(exc) or field in str(exc), str(exc)
        return
    got, want = decode(driver, argv), decode(driver, baseline)
    assert [[k for k, _ in opts] for opts in got] == [[k for k, _ in opts] for opts in want], (
        f"{driver}: {field} with {bad!r} changed the options: {argv}"
    )
    changed = 0
    for opts, base in zip(got, want, strict=True):
        for (_, v), (_, b) in zip(opts, base, strict=True):
            if v != b:
                assert v == b.replace("Q_Q", f"Q{bad}Q"), f"{field}: {v!r} is not {b!r}"
                changed += 1
    assert changed or json.dumps(f"Q{bad}Q")[1:-1] in api or "Q_Q" not in base_api + str(baseline)


def test_the_issue_attack_is_refused_naming_the_field(tmp_path: Path) -> None:
    """`--share "/tmp/pub,source=/tmp/secret:pub:ro"` once served /tmp/secret read-write."""
    with pytest.raises(SpecError, match=r"shares\[0\]\.host: .*contains a comma"):
        spec_from_dict(
            {
                "name": "v",
                "boot": {"kernel": "/k"},
                "shares": [{"host": "/tmp/pub,source=/tmp/secret", "tag": "pub", "readonly": True}],
            },
            check_files=False,
        )
    with pytest.raises(InvalidInput, match=r"share 'pub': .*comma"):
        argv_for("virtiofsd", Path("/tmp/pub,source=/"), tmp_path / "s", True, "share 'pub'")


@pytest.mark.parametrize(
    ("raw", "qemu", "ch"),
    [
        ("/a/b", "/a/b", "/a/b"),
        ("/a,b", "/a,,b", '"/a,b"'),
        ("/a=b", "/a=b", '"/a=b"'),
        ("/a[0]", "/a[0]", '"/a[0]"'),
    ],
)
def test_escaping_rules(raw: str, qemu: str, ch: str) -> None:
    assert optstr.qemu("f", raw) == qemu
    assert optstr.cloud_hypervisor("f", raw) == ch
    assert qemu_split(f"file={optstr.qemu('f', raw)}") == [("file", raw)]
    assert ch_split(f"path={optstr.cloud_hypervisor('f', raw)}") == [("path", raw)]


def test_refusals_name_the_field() -> None:
    with pytest.raises(InvalidInput, match=r"^serial_log: .*newline"):
        optstr.qemu("serial_log", "/a\nb")
    with pytest.raises(InvalidInput, match=r"^VMKIT_HOME: .*double quote"):
        optstr.cloud_hypervisor("VMKIT_HOME", '/a"b')
    with pytest.raises(InvalidInput, match=r"^x: .*backslash"):
        optstr.virtiofsd("x", "/a\\b")
