"""E2E fixtures: real QEMU (TCG) and the tiny guest, built if missing."""

from __future__ import annotations

import shutil

import pytest

from vmkit.guest.build import GuestImage, build, find_built
from vmkit.hostinfo import machine_arch

QEMU = f"qemu-system-{machine_arch()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            if shutil.which(QEMU) is None:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"{QEMU} is not installed (scripts/setup.sh installs it)"
                    )
                )


@pytest.fixture(scope="session")
def guest() -> GuestImage:
    return find_built() or build()
