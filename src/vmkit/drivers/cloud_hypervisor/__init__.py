"""Cloud Hypervisor driver, API mode: the VMM starts with only `--api-socket` (and an event
monitor); the VM is described by a `vm.create` body and booted with `vm.boot`, so
`--dry-run` shows every request, and pause, snapshot/restore, hotplug and migration all go
through the same REST API. Stop presses the power button and only then escalates
(`vm.shutdown` + `vmm.shutdown`, SIGTERM, SIGKILL): CH treats SIGTERM as an immediate exit.

TAP NICs are not named in `vm.create` (CH would open the TAP by name in its own network
namespace and put its default 192.168.249.1/24 on it): vmkit opens each TAP itself and hands
CH the fd with `vm.add-net` (SCM_RIGHTS) between `vm.create` and `vm.boot`, as libvirt does.

Run against the real Cloud Hypervisor v54 at VMM level (tests/e2e/test_ch_vmm.py); where
real CH differs from its spec, vmkit reads CH's own files (ch_facts).
"""

from __future__ import annotations

from vmkit.drivers.cloud_hypervisor.control import CloudHypervisorControl
from vmkit.drivers.cloud_hypervisor.driver import *  # noqa: F403 - the driver's public names
from vmkit.drivers.cloud_hypervisor.driver import CloudHypervisorDriver

CloudHypervisorDriver.control_class = CloudHypervisorControl
