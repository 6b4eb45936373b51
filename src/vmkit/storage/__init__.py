"""Disks, kernels and images: the files a VM boots from."""
