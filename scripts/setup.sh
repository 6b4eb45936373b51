#!/usr/bin/env bash
# Install everything vmkit and its tests need on a fresh Debian/Ubuntu machine (run as root):
# QEMU + qemu-img from the distro, a venv with vmkit and its test tools from PyPI, and the
# tiny guest (Debian kernel + busybox initramfs) built into the user cache. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -m)" in
    x86_64) qemu_pkg=qemu-system-x86; qemu_bin=qemu-system-x86_64; uefi_pkg=ovmf; efi_arch=x64 ;;
    aarch64) qemu_pkg=qemu-system-arm; qemu_bin=qemu-system-aarch64; uefi_pkg=qemu-efi-aarch64; efi_arch=aa64 ;;
    *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

pkgs=()
command -v "$qemu_bin" >/dev/null || pkgs+=("$qemu_pkg")
command -v qemu-system-aarch64 >/dev/null || pkgs+=(qemu-system-arm)  # the arm64 guest tests
dpkg -s "$uefi_pkg" >/dev/null 2>&1 || pkgs+=("$uefi_pkg")  # UEFI firmware (boot.kind: efi)
dpkg -s qemu-efi-aarch64 >/dev/null 2>&1 || pkgs+=(qemu-efi-aarch64)  # emulated arm64 EFI test
# EFI boot tests build a GPT disk with systemd-boot on a FAT ESP (no root, no loop devices).
[ -e "/usr/lib/systemd/boot/efi/systemd-boot${efi_arch}.efi" ] || pkgs+=(systemd-boot-efi)
command -v mcopy >/dev/null || pkgs+=(mtools)
command -v mkfs.vfat >/dev/null || [ -x /sbin/mkfs.vfat ] || pkgs+=(dosfstools)
command -v qemu-img >/dev/null || pkgs+=(qemu-utils)
command -v cpio >/dev/null || pkgs+=(cpio)  # tests extract the initramfs with the real tool
command -v zstd >/dev/null || pkgs+=(zstd)  # zstd/lz4 vmlinuz -> raw Image (vfkit), and tests
command -v lz4 >/dev/null || pkgs+=(lz4)
command -v xz >/dev/null || pkgs+=(xz-utils)
command -v ip >/dev/null || pkgs+=(iproute2)  # TAP/netns tests
command -v mkfs.btrfs >/dev/null || pkgs+=(btrfs-progs)  # reflink clone tests (loopback btrfs)
command -v mkfs.xfs >/dev/null || pkgs+=(xfsprogs)  # ... and on a loopback xfs
command -v filefrag >/dev/null || pkgs+=(e2fsprogs)
command -v blkid >/dev/null || pkgs+=(util-linux)  # the seed ISO's label, as cloud-init finds it
command -v ssh-keygen >/dev/null || pkgs+=(openssh-client)  # vmkit's per-host SSH key
command -v curl >/dev/null || pkgs+=(curl)  # bench/storage.py compares downloads with curl
command -v python3 >/dev/null || pkgs+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
if ((${#pkgs[@]})); then
    echo "setup: installing ${pkgs[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
# virtiofsd (shares): part of qemu-system-common on Debian 12, its own package from Debian 13.
if [ ! -x /usr/lib/qemu/virtiofsd ] && [ ! -x /usr/libexec/virtiofsd ] && ! command -v virtiofsd >/dev/null; then
    echo "setup: installing virtiofsd" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends virtiofsd >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/vmkit guest build
# The arm64 tiny guest (what an Apple silicon Mac boots with vfkit): tests boot it under
# qemu-system-aarch64 and take their arm64 kernel fixtures from it. Cached.
.venv/bin/vmkit guest build --arch arm64
.venv/bin/python scripts/fetch_test_kernels.py  # arm64 kernel fixtures (cached)
