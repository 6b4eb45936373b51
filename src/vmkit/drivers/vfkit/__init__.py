"""The vfkit and krunkit driver: driver.py plans a launch (checks.py: what it refuses first),
control.py drives the running VMM (the module docstring of driver.py says how)."""

from __future__ import annotations

from vmkit.drivers.vfkit.control import KrunkitControl, PausableVfkitControl
from vmkit.drivers.vfkit.control import VfkitControl as VfkitControl
from vmkit.drivers.vfkit.driver import *  # noqa: F403 - the driver's public names
from vmkit.drivers.vfkit.driver import KrunkitDriver, VfkitDriver

VfkitDriver.control_class = PausableVfkitControl
KrunkitDriver.control_class = KrunkitControl
