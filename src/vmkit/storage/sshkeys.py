"""Trust for `vmkit ssh`: a per-VM SSH host key, pinned before the first connection.

vmkit makes each VM's ed25519 host key itself (ssh-keygen, private key 0600 in the VM's
folder) and writes the public half to the VM's own known_hosts under the alias
`vmkit-NAME`, so ssh runs with StrictHostKeyChecking=yes from the very first connection:
no trust on first use. The guest gets the private key as a file: cloud images through the
cloud-init seed (`ssh_keys`), the tiny guest through a second initramfs archive appended to
its own at start (access/boot.py). The client side is
vmkit's per-host key ($VMKIT_HOME/ssh/id_ed25519, storage.seed.host_key).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from vmkit.errors import VmkitError

HOST_KEY = "ssh_host_ed25519_key"
KNOWN_HOSTS = "known_hosts"


def alias(name: str) -> str:
    """The name the VM's key is pinned under (ssh's HostKeyAlias)."""
    return f"vmkit-{name}"


def private_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def host_key(vm_dir: Path, name: str) -> Path:
    """The VM's host key (made on first use) and its pin in the VM's known_hosts."""
    key = vm_dir / HOST_KEY
    if not key.exists():
        keygen = shutil.which("ssh-keygen")
        if keygen is None:
            raise VmkitError(
                "ssh-keygen not found to make the VM's SSH host key: install openssh-client"
            )
        tmp = vm_dir / f".{HOST_KEY}.new"
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".new.pub").unlink(missing_ok=True)
        proc = subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", alias(name), "-f", str(tmp)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise VmkitError(f"ssh-keygen failed: {proc.stderr.strip()}")
        os.chmod(tmp, 0o600)
        os.chmod(tmp.with_suffix(".new.pub"), 0o600)  # vmkit's files are 0600, public or not
        os.replace(tmp.with_suffix(".new.pub"), key.with_suffix(".pub"))
        os.replace(tmp, key)
    pin(vm_dir, name)
    return key


def public_key(vm_dir: Path) -> str:
    return (vm_dir / HOST_KEY).with_suffix(".pub").read_text().split("\n")[0].strip()


def pin(vm_dir: Path, name: str) -> Path:
    """Write the VM's known_hosts: exactly one line, its alias and its public host key."""
    kt, b64 = public_key(vm_dir).split()[:2]
    path = vm_dir / KNOWN_HOSTS
    private_write(path, f"{alias(name)} {kt} {b64}\n".encode())
    return path


def cloud_init_keys(vm_dir: Path, name: str) -> dict[str, Any]:
    """The user-data `ssh_keys` section that makes cloud-init install this host key."""
    key = host_key(vm_dir, name)
    return {
        "ssh_keys": {
            "ed25519_private": key.read_text(),
            "ed25519_public": public_key(vm_dir),
        },
        "ssh_deletekeys": True,
    }
