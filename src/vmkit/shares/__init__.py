"""Shared folders: host directories the guest mounts over virtio-fs."""
