"""Networking pieces shared by the drivers: MACs, the userspace L2 switch."""
