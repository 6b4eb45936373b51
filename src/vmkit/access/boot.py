"""Hand the tiny guest its SSH keys at boot: its initramfs is swapped for the VM's own copy
with a second archive appended, holding the host key and the authorized client key as files
(the kernel unpacks concatenated archives in order); any other guest boots as specified."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from vmkit.spec import LinuxBoot, MachineSpec
from vmkit.storage import sshkeys as keys

TYPE_CHECKING = False  # not typing's: a restore reads runs_vmkit_agent
if TYPE_CHECKING:
    from typing import Any

GUEST_INITRD = "initrd-access.img"  # base initramfs + the key archive, rebuilt at each start
GUEST_INITRD_STAMP = f"{GUEST_INITRD}.stamp"  # its parts, to tell when to rebuild it
# What a new VM takes from a spare (access/spare.py): its host key and its keyed initrd.
SPARE_FILES = (keys.HOST_KEY, f"{keys.HOST_KEY}.pub", GUEST_INITRD, GUEST_INITRD_STAMP)
GUEST_KEY_PATH = "etc/vmkit/ssh_host_ed25519_key"  # what the tiny guest's /init looks for


def boot_spec(spec: MachineSpec, vm_dir: Path, home: Path, write: bool) -> MachineSpec:
    """`spec` with the tiny guest's initrd replaced by the VM's own copy carrying the keys
    (written when `write`; `vmkit start --dry-run` only shows the path)."""
    boot = keyed_boot(spec)
    if boot is None or boot.initrd is None:
        return spec
    if write:
        from vmkit.access import spare
        from vmkit.storage.seed import host_key as client_key

        client_pub = client_key(home).with_suffix(".pub").read_text()
        spare.take(home, vm_dir, SPARE_FILES)  # a new VM: what an earlier boot made for it
        path = guest_initrd(vm_dir, spec.name, boot.initrd, client_pub)
    else:
        path = vm_dir / GUEST_INITRD
    return spec.replace(boot=boot.replace(initrd=path))


def make_spare(spec: MachineSpec, home: Path) -> None:
    """While `spec`'s guest boots: a spare key and initrd for the next VM (access/spare.py)."""
    boot = keyed_boot(spec)
    if boot is None or boot.initrd is None:
        return
    from vmkit.access import spare
    from vmkit.storage.seed import host_key as client_key

    try:
        client_pub = client_key(home).with_suffix(".pub").read_text()
    except OSError:
        return
    base = boot.initrd
    spare.prepare(home, lambda folder, name: guest_initrd(folder, name, base, client_pub))


def keyed_boot(spec: MachineSpec) -> LinuxBoot | None:
    """The boot of a tiny guest with an SSH server (its initrd gets the key archive)."""
    boot = spec.boot
    if isinstance(boot, LinuxBoot) and has_sshd(tiny_guest_manifest(boot.initrd)):
        return boot
    return None


def runs_vmkit_agent(spec: MachineSpec) -> bool:
    """Whether the guest boots vmkit's tiny guest (its /init is vmkit's agent), which takes
    requests the user's own agents need not know (guestctl.restored_request)."""
    boot = spec.boot
    return isinstance(boot, LinuxBoot) and tiny_guest_manifest(boot.initrd) is not None


def tiny_guest_manifest(initrd: Path | None) -> dict[str, Any] | None:
    """The manifest of the built tiny guest `initrd` belongs to, if it is one."""
    if initrd is None or initrd.name != "initramfs.cpio.gz":
        return None
    manifest = initrd.parent / "manifest.json"
    try:
        doc = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "recipe" in doc else None


def has_sshd(manifest: dict[str, Any] | None) -> bool:
    packages = (manifest or {}).get("packages")
    return isinstance(packages, dict) and "dropbear-bin" in packages


def key_archive(host_key_file: Path, client_pub: str) -> bytes:
    """A newc archive with the host key and the authorized client key, each as a file."""
    from vmkit.guest import cpio  # here: a start whose keyed initrd is made needs none

    entries = [
        cpio.directory("etc/vmkit", 0o700),
        cpio.file(GUEST_KEY_PATH, host_key_file.read_bytes(), 0o600),
        cpio.directory("root/.ssh", 0o700),
        cpio.file("root/.ssh/authorized_keys", (client_pub.strip() + "\n").encode(), 0o600),
    ]
    return cpio.write(entries)


def guest_initrd(vm_dir: Path, name: str, base: Path, client_pub: str) -> Path:
    """`vm_dir/initrd-access.img`: the tiny guest's initramfs with the key archive appended
    (gzip members need no alignment between them). 0600: it holds the private key. Written
    once per change of its parts (a stamp beside it), not at every start: it is 4 MB."""
    key = keys.host_key(vm_dir, name)
    out = vm_dir / GUEST_INITRD
    stamp_file = vm_dir / GUEST_INITRD_STAMP
    b, k = base.stat(), key.stat()
    stamp = json.dumps([str(base), b.st_size, b.st_mtime_ns, k.st_mtime_ns, client_pub])
    with contextlib.suppress(OSError):  # made by an earlier start from the same parts
        if stamp_file.read_text() == stamp and out.is_file():
            return out
    import gzip

    combined = base.read_bytes() + gzip.compress(key_archive(key, client_pub), mtime=0)
    keys.private_write(out, combined)
    keys.private_write(stamp_file, stamp.encode())
    return out
