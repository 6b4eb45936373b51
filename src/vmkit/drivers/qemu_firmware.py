"""UEFI firmware for QEMU, found the way libvirt finds it: QEMU's firmware descriptors.

Distros describe each firmware build in a JSON file (QEMU docs/interop/firmware.json) under
`/usr/share/qemu/firmware`, overridable by same-named files in `/etc/qemu/firmware` and
`$XDG_CONFIG_HOME/qemu/firmware`; Homebrew's QEMU ships them under its prefix. vmkit takes
the first, by file name, that is UEFI on flash for the guest's architecture and machine
type and needs neither SMM nor Secure Boot (vmkit enables neither). The code goes in
read-only; each VM gets its own copy of the variable-store template, so its boot entries
persist across boots and die with the VM. Known distro paths are the fallback.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmkit.errors import NotFound

# A machine-type name of each kind vmkit starts, to match descriptors' glob patterns.
MACHINE_SAMPLE = {"x86_64": "pc-q35-9.0", "aarch64": "virt-9.0"}
UNWANTED_FEATURES = {"requires-smm", "secure-boot", "enrolled-keys", "amd-sev-es", "intel-tdx"}
FALLBACK = {
    "x86_64": [
        ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
        ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
        ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ],
    "aarch64": [
        ("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),
        (
            "/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw",
            "/usr/share/edk2/aarch64/vars-template-pflash.raw",
        ),
    ],
}
INSTALL_HINT = {
    "x86_64": "`apt install ovmf` (Debian/Ubuntu), `dnf install edk2-ovmf` (Fedora)",
    "aarch64": "`apt install qemu-efi-aarch64` (Debian/Ubuntu), `dnf install edk2-aarch64`",
}


@dataclass(frozen=True)
class Firmware:
    code: Path
    vars_template: Path | None  # None: the code image is all there is (no writable store)
    source: str  # the descriptor (or fallback) it came from, for `inspect` and errors


def descriptor_dirs() -> list[Path]:
    """Lowest to highest precedence: a same-named file in a later dir overrides."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [
        Path("/opt/homebrew/share/qemu/firmware"),
        Path("/usr/local/share/qemu/firmware"),
        Path("/usr/share/qemu/firmware"),
        Path("/etc/qemu/firmware"),
        Path(xdg) / "qemu" / "firmware",
    ]


def descriptors(dirs: list[Path] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable descriptor, by file name, later dirs overriding earlier ones (an
    empty file masks the name, as the spec says)."""
    by_name: dict[str, Path] = {}
    for d in dirs if dirs is not None else descriptor_dirs():
        try:
            for path in d.glob("*.json"):
                by_name[path.name] = path
        except OSError:
            continue
    out = []
    for name in sorted(by_name):
        path = by_name[name]
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # empty (masking) or broken: skipped
        if isinstance(data, dict):
            out.append((path, data))
    return out


def _fits(data: dict[str, Any], arch: str) -> Firmware | None:
    if "uefi" not in data.get("interface-types", []):
        return None
    if UNWANTED_FEATURES & set(data.get("features", [])):
        return None
    mapping = data.get("mapping") or {}
    if mapping.get("device") != "flash":
        return None
    sample = MACHINE_SAMPLE[arch]
    if not any(
        t.get("architecture") == arch
        and any(fnmatch.fnmatch(sample, m) for m in t.get("machines", []))
        for t in data.get("targets", [])
    ):
        return None
    code = (mapping.get("executable") or {}).get("filename")
    if not code or (mapping.get("executable") or {}).get("format", "raw") != "raw":
        return None
    template = (mapping.get("nvram-template") or {}).get("filename")
    if mapping.get("mode", "split") == "split" and not template:
        return None
    if not os.access(code, os.R_OK) or (template and not os.access(template, os.R_OK)):
        return None
    return Firmware(Path(code), Path(template) if template else None, "")


def find_uefi(arch: str, dirs: list[Path] | None = None) -> Firmware:
    """The UEFI firmware QEMU should load for `arch`; NotFound names the package."""
    if arch not in MACHINE_SAMPLE:
        raise NotFound(f"vmkit knows no UEFI firmware for {arch} guests")
    for path, data in descriptors(dirs):
        fw = _fits(data, arch)
        if fw is not None:
            return Firmware(fw.code, fw.vars_template, str(path))
    for code, template in FALLBACK[arch]:
        if os.access(code, os.R_OK) and os.access(template, os.R_OK):
            return Firmware(Path(code), Path(template), "known path")
    raise NotFound(
        f"no UEFI firmware for {arch} QEMU guests (boot.kind: efi): install it with "
        f"{INSTALL_HINT[arch]}, or give its code image as boot.firmware"
    )


def from_spec(firmware: Path) -> Firmware:
    """A firmware the spec names: split code + `*VARS*` template beside it when there is
    one (OVMF_CODE.fd -> OVMF_VARS.fd), else a single image loaded with `-bios`."""
    name = firmware.name
    for a, b in (("CODE", "VARS"), ("code", "vars")):
        if a in name:
            template = firmware.with_name(name.replace(a, b))
            if template.is_file():
                return Firmware(firmware, template, "boot.firmware")
    return Firmware(firmware, None, "boot.firmware")
