"""vfkit driver (macOS, Virtualization.framework), and krunkit as a variant of it.

spec -> `vfkit` argv in vfkit's own grammar and canonical key order (the values:
vfkit_argv); control over vfkit's REST API on a Unix socket (vfkit_api). vfkit splits every
`--device` value on *every* comma with no quoting, so a path with a comma cannot be passed:
it is refused up front, naming the field. On Apple Silicon the kernel must be a raw arm64
`Image`: a compressed vmlinuz or EFI zboot kernel is decompressed into the VM's folder
before launch (storage.kernel).

krunkit (libkrun) takes the same command-line style with these differences: EFI boot only,
qcow2 disks (`format=`), networking only through a userspace switch (`type=unixgram`), and a
REST API with GET /vm/state and POST Stop only (no HardStop, Pause, Resume or inspect).

None of this has run on a Mac yet: its argv is checked by vfkit's own parsing code
(../shared/tools/vfkit-parse) and the REST client against a scripted double (tests/contract),
so docs/capabilities.md says "contract-tested".
"""

from __future__ import annotations

from vmkit.drivers.vfkit.control import KrunkitControl, PausableVfkitControl
from vmkit.drivers.vfkit.control import VfkitControl as VfkitControl
from vmkit.drivers.vfkit.driver import *  # noqa: F403 - the driver's public names
from vmkit.drivers.vfkit.driver import KrunkitDriver, VfkitDriver

VfkitDriver.control_class = PausableVfkitControl
KrunkitDriver.control_class = KrunkitControl
