"""The Tart driver (cirruslabs/tart on macOS): see driver.py."""

from vmkit.drivers.tart.driver import TartDriver

__all__ = ["TartDriver"]
