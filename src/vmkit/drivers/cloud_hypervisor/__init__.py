"""The Cloud Hypervisor driver: driver.py plans a launch, control.py drives the running VMM
(the module docstring of driver.py says how)."""

from __future__ import annotations

from vmkit.drivers.cloud_hypervisor.control import CloudHypervisorControl
from vmkit.drivers.cloud_hypervisor.driver import *  # noqa: F403 - the driver's public names
from vmkit.drivers.cloud_hypervisor.driver import CloudHypervisorDriver

CloudHypervisorDriver.control_class = CloudHypervisorControl
