"""QEMU driver: spec -> `qemu-system-*` argv; control over QMP.

q35 (x86_64) or virt (aarch64), `-nodefaults`, the serial console on a Unix socket with a
logfile (so `vmkit console` can attach while serial.log keeps everything), QMP on a Unix
socket, seccomp sandbox on, and a trace of shutdown requests so vmkit can tell a guest
poweroff from a crash after the fact (it is not QEMU's parent by then).
"""

from __future__ import annotations

from vmkit.drivers.qemu.control import QemuControl
from vmkit.drivers.qemu.driver import *  # noqa: F403 - the driver's public names
from vmkit.drivers.qemu.driver import QemuDriver

QemuDriver.control_class = QemuControl
