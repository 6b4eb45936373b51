"""Tart's command line (cirruslabs/tart, Sources/tart/Commands): the argv of each command
vmkit runs, the value checks its option syntax needs, and running it under a VM's own
TART_HOME.

Tart keeps VMs in `$TART_HOME/vms/NAME` (default ~/.tart). vmkit gives each VM its own
TART_HOME inside the VM's folder, so `vmkit rm` and `gc` own it, and links its `cache`
(pulled OCI images) to one shared folder in vmkit's store, so an image is pulled once.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from vmkit.errors import InvalidInput, VmkitError

VM = "vm"  # the Tart VM's name inside its private TART_HOME (vmkit's name lives in its store)
CONTROL = ".vmkit-control"  # never created: its parent names TART_HOME for control calls


def home_of(vm_dir: Path) -> Path:
    return vm_dir / "tart"


def control_path(vm_dir: Path) -> Path:
    """What the VM's runtime record holds as its "socket": Tart has no control socket,
    and the control calls need only TART_HOME, which is this path's parent."""
    return home_of(vm_dir) / CONTROL


def shared_cache(home: Path) -> None:
    """Make `home` (0700) with its `cache` (Tart's pulled OCI images) linked to the one
    folder every vmkit VM shares, `$VMKIT_HOME/tart-cache`: an image is pulled once."""
    from vmkit.paths import data_home, ensure_private_dir

    root = ensure_private_dir(data_home())  # made 0700 first: never by a parents=True below
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    cache = root / "tart-cache"
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (home / "cache").exists():
        (home / "cache").symlink_to(cache)


def pull(binary: str, ref: str) -> Path:
    """`tart pull REF` into the shared cache (for `vmkit image pull oci://REF`), so the
    first start of a VM cloned from it copies instead of downloading."""
    from vmkit.paths import data_home, ensure_private_dir

    if not ref or any(c.isspace() for c in ref) or ref.startswith("-"):
        raise InvalidInput(f"image: {ref!r} is not an OCI reference (host/repository[:tag])")
    root = ensure_private_dir(data_home())
    home = root / "tart-pull"
    shared_cache(home)
    run(binary, home, ["pull", ref], timeout=None)
    return root / "tart-cache"


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "TART_HOME": str(home)}


def dir_option(host: Path, tag: str, readonly: bool) -> str:
    """`--dir=PATH:[ro,]tag=TAG` (Run.swift DirectoryShare: options after the last `:`,
    comma-separated; an optional `name:` before the path)."""
    path = colon_free(f"shares[{tag}].host", host)
    if any(c in tag for c in ",:=") or not tag:
        raise InvalidInput(
            f"shares[].tag {tag!r}: Tart's --dir cannot carry ',', ':' or '=' in a mount tag"
        )
    return f"--dir={path}:{'ro,' if readonly else ''}tag={tag}"


def disk_option(field: str, path: Path, readonly: bool) -> str:
    """`--disk=PATH[:ro]` (Run.swift additionalDiskAttachments)."""
    return f"--disk={colon_free(field, path)}{':ro' if readonly else ''}"


def colon_free(field: str, path: Path) -> str:
    """Tart splits --dir on `:` and reads a trailing `:ro` on --disk: refuse `:` in paths."""
    text = str(path)
    if ":" in text or "\0" in text or "\n" in text:
        raise InvalidInput(
            f"{field}: {text!r} contains ':' (or a newline/NUL); Tart splits its --dir and "
            "--disk values on ':' and would read another path: rename or move it"
        )
    if not text.startswith("/"):
        raise InvalidInput(f"{field}: {text!r} must be an absolute path")
    return text


def run(binary: str, home: Path, args: list[str], timeout: float | None = 60) -> str:
    """Run `tart ARGS` under `home`; its stdout, or a VmkitError quoting what Tart said."""
    try:
        proc = subprocess.run(
            [binary, *args],
            env=env_for(home),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VmkitError(f"`tart {' '.join(args)}` failed: {exc}") from None
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip())[-500:]
        raise VmkitError(f"`tart {' '.join(args)}` failed (exit {proc.returncode}): {said}")
    return proc.stdout


def set_mac(home: Path, mac: str) -> None:
    """Write `macAddress` into the VM's config.json (Tart's VMConfig; `tart set` has only
    --random-mac), keeping every other key, atomically."""
    config_path = home / "vms" / VM / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise VmkitError(f"cannot read Tart's {config_path}: {exc}") from None
    if config.get("macAddress") == mac:
        return
    config["macAddress"] = mac
    tmp = config_path.with_name(".config.json.vmkit")
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(config_path)


def get(binary: str, home: Path, timeout: float = 5) -> dict[str, Any] | None:
    """`tart get VM --format json` (CPU, Memory, Disk, OS, State, ...), None if it fails."""
    try:
        data = json.loads(run(binary, home, ["get", VM, "--format", "json"], timeout))
    except (VmkitError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ip(binary: str, home: Path) -> str | None:
    """`tart ip VM` (the MAC's address in the host's ARP cache / DHCP leases), or None."""
    try:
        out = run(binary, home, ["ip", VM], timeout=10).strip()
    except VmkitError:
        return None
    return out.splitlines()[-1].strip() if out else None


@functools.cache
def _help(binary: str, mtime_ns: int, command: str) -> str:
    try:
        proc = subprocess.run(
            [binary, command, "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout + proc.stderr


def help_text(binary: str, command: str) -> str:
    """`tart COMMAND --help`, once per installed binary: what this Tart's flags are."""
    try:
        mtime = os.stat(binary).st_mtime_ns
    except OSError:
        return ""
    return _help(binary, mtime, command)
