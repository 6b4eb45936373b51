"""The arm64 tiny guest, the one an Apple silicon Mac boots with vfkit, on a real arm64
machine: QEMU's aarch64 emulator (TCG, `virt` board). vfkit itself cannot run here, so
this does not make the vfkit driver "supported"; it proves the parts vmkit hands vfkit
(the cross-built guest, the raw Image vmkit decompresses from a vmlinuz or EFI zboot
kernel, the cmdline with console=hvc0) boot an arm64 machine to the readiness line on a
virtio console written to a log file, as vfkit's `virtio-serial,logFilePath=` is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmkit.drivers.base import LaunchContext
from vmkit.drivers.qmp import QMP
from vmkit.drivers.vfkit import VfkitDriver
from vmkit.guest.build import GuestImage, build, find_built
from vmkit.hostinfo import machine_arch
from vmkit.paths import cache_dir
from vmkit.readiness import ReadinessFollower
from vmkit.spec import spec_from_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "contract"))
from guestio import guest_run
from vfkit_grammar import parse_argv  # the contract tests' vfkit grammar

QEMU_ARM = "qemu-system-aarch64"
TEST_KERNELS = cache_dir() / "test-kernels"  # scripts/fetch_test_kernels.py
BOOT_TIMEOUT = 120.0

pytestmark = pytest.mark.skipif(
    shutil.which(QEMU_ARM) is None, reason=f"{QEMU_ARM} is not installed (scripts/setup.sh)"
)


@pytest.fixture(scope="module")
def arm_guest() -> GuestImage:
    return find_built(arch="arm64") or build(arch="arm64")


def boot(
    kernel: Path, initrd: Path, cmdline: str, tmp: Path
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """QEMU aarch64 with vfkit's device set: virtio console to a file, net, rng, balloon."""
    log, qmp = tmp / "serial.log", tmp / "qmp.sock"
    argv = [
        QEMU_ARM, "-M", "virt", "-cpu", "cortex-a72", "-smp", "1", "-m", "256",
        "-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
        "-device", "virtio-serial-pci", "-chardev", f"file,id=c0,path={log}",
        "-device", "virtconsole,chardev=c0",
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-rng-pci", "-device", "virtio-balloon-pci",
        "-qmp", f"unix:{qmp},server=on,wait=off",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(tmp / "qemu.err").open("wb"))
    return proc, log, qmp


def wait_ready(proc: subprocess.Popen[bytes], log: Path, marker: str) -> str | None:
    follower = ReadinessFollower(log, marker)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        ready = follower.poll()
        if ready is not None:
            return ready.ip or "-"
        assert proc.poll() is None, f"QEMU exited {proc.returncode}: {log.read_text()[-2000:]}"
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no {marker} in {BOOT_TIMEOUT}s: {log.read_text(errors='replace')[-2000:]}")


def power_button_stops_it(proc: subprocess.Popen[bytes], qmp: Path, log: Path) -> None:
    with QMP(qmp) as q:
        q.execute("system_powerdown")
    try:
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "vmkit-guest: powering off" in log.read_text(errors="replace")


def test_arm64_tiny_guest_boots_ready_and_powers_off_on_the_button(
    arm_guest: GuestImage, tmp_path: Path
) -> None:
    assert arm_guest.arch == "arm64" and arm_guest.kernel == arm_guest.image
    assert arm_guest.image.read_bytes()[0x38:0x3C] == b"ARM\x64"  # raw, as vfkit needs
    proc, log, qmp = boot(
        arm_guest.kernel, arm_guest.initrd, "console=hvc0 vmkit.dhcp=1 vmkit.marker=A64", tmp_path
    )
    ip = wait_ready(proc, log, "A64")
    assert ip == "10.0.2.15"  # QEMU user net's DHCP reached the guest over virtio-net
    power_button_stops_it(proc, qmp, log)


@pytest.mark.parametrize("compressed", ["Image.gz", "zboot-zst.efi"])
def test_what_the_vfkit_driver_prepares_boots_an_arm64_machine(
    arm_guest: GuestImage, tmp_path: Path, compressed: str
) -> None:
    """A compressed kernel (the forms distros ship) given to the vfkit driver: its `prepare`
    writes the raw Image into the VM dir and its argv names that Image, the initrd and a
    cmdline with console=hvc0; exactly those boot to readiness."""
    kernel = TEST_KERNELS / compressed
    if not kernel.exists():
        pytest.skip(f"{kernel} missing (scripts/fetch_test_kernels.py makes it)")
    if kernel.with_name("SOURCE").read_text().split("_")[0] != (
        f"linux-image-{arm_guest.manifest['kernel_version']}"
    ):
        pytest.skip("the test kernel and the arm64 guest's modules are different versions")
    spec = spec_from_dict(
        {
            "name": "arm",
            "boot": {
                "kernel": str(kernel),
                "initrd": str(arm_guest.initrd),
                "cmdline": "vmkit.marker=PREPARED",
            },
        }
    )
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    ctx = LaunchContext(
        vm_dir=vm_dir,
        serial_log=vm_dir / "serial.log",
        events_log=vm_dir / "vmm-events.log",
        sockets={"rest": tmp_path / "r.sock"},
        accelerator="hvf",
    )
    driver = VfkitDriver(arch="aarch64", version=(0, 6, 1))
    driver.prepare(spec, ctx)
    argv = parse_argv(driver.plan(spec, ctx).argv)
    assert argv.bootloader is not None
    kind, opts = argv.bootloader
    assert kind == "linux" and opts["kernel"] == str(vm_dir / "Image")
    assert opts["initrd"] == str(arm_guest.initrd)
    assert opts["cmdline"] is not None and "console=hvc0" in opts["cmdline"]
    proc, log, qmp = boot(Path(opts["kernel"]), Path(opts["initrd"]), opts["cmdline"], tmp_path)
    assert wait_ready(proc, log, "PREPARED") == "-"  # no vmkit.dhcp: no address asked for
    power_button_stops_it(proc, qmp, log)


@pytest.mark.skipif(machine_arch() != "x86_64", reason="emulates arm64 on an x86_64 host")
@pytest.mark.capability("qemu", "arch_emulation", "console")
def test_vmkit_runs_the_arm64_guest_emulated_on_this_x86_64_host(cli, arm_guest) -> None:
    ready = cli.json("run", "a64", "--arch", "arm64", "--net", "user", "--timeout", "120")
    assert ready["state"] == "ready" and ready["ip"] == "10.0.2.15"
    argv = cli.json("inspect", "a64")["runtime"]["argv"]
    assert argv[0].endswith("qemu-system-aarch64") and argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-kernel") + 1] == str(arm_guest.image)
    guest_run(cli, "a64", "uname -m", r"aarch64")
    stopped = cli.json("stop", "a64", "--timeout", "60")
    assert stopped[0]["step"] == "acpi", stopped  # gpio-keys power button on `virt`


def test_an_emulated_guest_refuses_hardware_acceleration_and_other_drivers(cli, arm_guest) -> None:
    proc = cli("create", "k1", "--arch", "aarch64", "--accel", "kvm")
    assert proc.returncode == 2 and "accelerator: 'kvm' runs only x86_64 guests" in proc.stderr
    proc = cli("create", "c1", "--arch", "aarch64", "--driver", "cloud-hypervisor")
    assert proc.returncode == 2 and "use driver: qemu to emulate aarch64" in proc.stderr
    proc = cli("create", "m1", "--arch", "mips")
    assert proc.returncode == 2 and "arch" in proc.stderr
    assert cli.json("ls") == []
