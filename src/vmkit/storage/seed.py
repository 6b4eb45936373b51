"""cloud-init NoCloud seed ISOs, built in pure Python (pycdlib; no genisoimage, no hdiutil).

The ISO has volume id `cidata` and the files `user-data`, `meta-data` and, when given,
`network-config`; cloud-init finds it on any block device by that label. vmkit adds a last
runcmd that prints the readiness line on the serial console; cloud-init runs runcmd in its
final stage, after installing packages and after the user's own commands, so `vmkit run`
returns when the guest is configured.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from vmkit.errors import VmkitError

# The guest's first global IPv4 address: `hostname -I` where it exists (Debian, Ubuntu,
# Fedora), else `ip` (busybox on Alpine has no `hostname -I`); `-` without a network.
READY_CMD = (
    'ip=$(hostname -I 2>/dev/null | cut -d" " -f1); '
    '[ -n "$ip" ] || ip=$(ip -4 -o addr show scope global 2>/dev/null '
    "| awk '{{split($4, a, \"/\"); print a[1]; exit}}'); "
    'for t in /dev/ttyS0 /dev/hvc0 /dev/ttyAMA0; do [ -c "$t" ] && '
    'echo "{marker} ${{ip:--}}" > "$t"; done; exit 0'  # absent ttys are no failure
)


def merge(ours: Any, theirs: Any) -> Any:
    """cloud-init's own way of merging parts: mappings recursively, lists appended, any
    other value replaced by `theirs`."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = dict(ours)
        for key, value in theirs.items():
            out[key] = merge(ours[key], value) if key in ours else value
        return out
    if isinstance(ours, list) and isinstance(theirs, list):
        return ours + theirs
    return theirs


def user_data(ci: dict[str, Any], marker: str, keys: list[str]) -> dict[str, Any]:
    """The #cloud-config document for the spec's `cloud_init` section.

    The user's `user_data` is merged in (see `merge`); the readiness line stays the last
    runcmd, so it is printed after everything else cloud-init was asked to do."""
    user: dict[str, Any] = {
        "name": ci.get("user") or "vmkit",
        "lock_passwd": True,
        "ssh_authorized_keys": keys,
    }
    if ci.get("shell"):
        user["shell"] = ci["shell"]
    if ci.get("sudo", True):
        user["sudo"] = "ALL=(ALL) NOPASSWD:ALL"  # a rule, not a group: distros name it apart
    doc: dict[str, Any] = {"users": ["default", user]}
    if ci.get("hostname"):
        doc["hostname"] = ci["hostname"]
    if ci.get("packages"):
        doc["packages"] = list(ci["packages"])
    if ci.get("runcmd"):
        doc["runcmd"] = list(ci["runcmd"])
    doc = merge(doc, ci.get("user_data") or {})
    if ci.get("ready_line", True):
        runcmd = doc.get("runcmd")
        doc["runcmd"] = [*(runcmd if isinstance(runcmd, list) else [])]
        doc["runcmd"].append(["sh", "-c", READY_CMD.format(marker=marker)])
    return doc


def render_user_data(doc: dict[str, Any]) -> str:
    import yaml

    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False)


def build_iso(
    path: Path,
    user_data_doc: dict[str, Any],
    meta_data: dict[str, Any],
    network_config: dict[str, Any] | None = None,
) -> None:
    """Write the seed ISO atomically (mode 0600: it may hold keys and passwords)."""
    import pycdlib
    import yaml

    files = {
        "user-data": render_user_data(user_data_doc).encode(),
        "meta-data": yaml.safe_dump(meta_data, sort_keys=False).encode(),
    }
    if network_config is not None:
        files["network-config"] = yaml.safe_dump(network_config, sort_keys=False).encode()
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for i, (name, data) in enumerate(files.items()):
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"/FILE{i};1",
            rr_name=name,
            joliet_path=f"/{name}",
        )
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            iso.write_fp(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        iso.close()


def host_key(home: Path) -> Path:
    """vmkit's per-host ed25519 key pair (private key 0600), made on first use.

    Made by ssh-keygen (openssh-client), the reference implementation of the OpenSSH key
    format that `ssh` will read; the `cryptography` library could do it too, but it is a
    large compiled dependency for one key per host, and a later `vmkit ssh` needs the
    `ssh` client from the same package anyway."""
    key = home / "ssh" / "id_ed25519"
    if key.exists():
        return key
    key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise VmkitError(
            "ssh-keygen not found to make vmkit's SSH key: install openssh-client, or give "
            "cloud_init.ssh_authorized_keys yourself"
        )
    proc = subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "vmkit", "-f", str(key)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise VmkitError(f"ssh-keygen failed: {proc.stderr.strip()}")
    os.chmod(key, 0o600)
    return key


def make_seed(spec_json: dict[str, Any], vm_dir: Path, home: Path) -> Path:
    """Build `vm_dir/seed.iso` from the spec's `cloud_init` section.

    vmkit's per-host key is always authorized (a later `vmkit ssh` uses it), then the
    spec's own keys. The instance-id is new for every VM made, so cloud-init treats a VM
    made again under an old name, from a disk that already booted, as a new instance."""
    ci = spec_json["cloud_init"]
    own = host_key(home).with_suffix(".pub").read_text().strip()
    keys = [own, *(k for k in ci.get("ssh_authorized_keys") or [] if k != own)]
    marker = spec_json.get("readiness", {}).get("marker", "VMKIT_READY")
    name = str(spec_json["name"])
    meta = {
        "instance-id": f"vmkit-{name}-{uuid.uuid4().hex[:12]}",
        "local-hostname": ci.get("hostname") or name,
    }
    from vmkit.storage.sshkeys import cloud_init_keys

    doc = {**user_data(ci, marker, keys), **cloud_init_keys(vm_dir, name)}  # the pinned host key
    path = vm_dir / "seed.iso"
    build_iso(path, doc, meta, ci.get("network_config"))
    return path
