"""The tiny test/demo guest: a Debian kernel plus a busybox initramfs."""
