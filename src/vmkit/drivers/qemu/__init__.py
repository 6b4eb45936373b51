"""The QEMU driver: driver.py plans a launch, control.py drives the running VMM
(the module docstring of driver.py says how)."""

from __future__ import annotations

from vmkit.drivers.qemu.control import QemuControl
from vmkit.drivers.qemu.driver import *  # noqa: F403 - the driver's public names
from vmkit.drivers.qemu.driver import QemuDriver

QemuDriver.control_class = QemuControl
