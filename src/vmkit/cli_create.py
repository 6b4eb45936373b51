"""`vmkit create | run`: a VM from flags or a spec file. The spec flags, and how they turn
into a spec (a file's values, with the flags given on top)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vmkit.cli_common import READ_HELP, report_ready
from vmkit.cli_common import echo_json as _echo_json
from vmkit.cli_common import host as _host
from vmkit.drivers import names as driver_names
from vmkit.errors import InvalidInput

if TYPE_CHECKING:
    from vmkit.machine.status import Status


def spec_options(f: Any) -> Any:
    options = [
        click.option(
            "-f", "--file", "spec_file", type=click.Path(path_type=Path), help="YAML/JSON spec."
        ),
        click.option("--cpus", type=str, help="Number of vCPUs (default 1)."),
        click.option("--memory", "-m", type=str, help="Memory, e.g. 256M, 2GiB (default 256M)."),
        click.option(
            "--kernel", type=click.Path(path_type=Path), help="Kernel (PVH vmlinux or bzImage)."
        ),
        click.option("--initrd", type=click.Path(path_type=Path), help="Initramfs."),
        click.option("--cmdline", type=str, help="Kernel command line."),
        click.option(
            "--arch",
            "guest_arch",
            type=str,
            help="Guest architecture (x86_64/amd64, aarch64/arm64); another than the host's "
            "is emulated by QEMU (TCG).",
        ),
        click.option(
            "--efi",
            is_flag=True,
            default=None,
            help="Boot the first disk through UEFI firmware (cloud images), not a kernel.",
        ),
        click.option(
            "--disk",
            "disks",
            multiple=True,
            type=click.Path(path_type=Path),
            help="Disk image (repeatable; qcow2 detected).",
        ),
        click.option(
            "--new-disk",
            "new_disks",
            multiple=True,
            metavar="SIZE[:qcow2]",
            help="A new empty disk the VM owns (repeatable), e.g. 10G or 10G:qcow2.",
        ),
        click.option(
            "--clone-disk",
            "clone_disks",
            multiple=True,
            type=click.Path(path_type=Path),
            help="A copy-on-write clone of an image file or a pulled image's name (e.g. "
            "debian-12), owned by the VM (repeatable).",
        ),
        click.option(
            "--disk-ro",
            "disks_ro",
            multiple=True,
            type=click.Path(path_type=Path),
            help="Read-only disk image.",
        ),
        click.option(
            "--net",
            "nets",
            multiple=True,
            metavar="MODE",
            help="NIC (repeatable): nat (or user), switch:NAME (a LAN with other VMs), "
            "tap:IFNAME[@NETNS] (Linux, root), vmnet:shared|host|bridged:IF (macOS, "
            "vmnet-helper), none (default).",
        ),
        click.option(
            "--ip",
            metavar="ADDR/PREFIX",
            help="Static IP of the first NIC (the tiny guest applies it; else DHCP).",
        ),
        click.option(
            "--share",
            "shares",
            multiple=True,
            metavar="HOST_DIR:TAG[:ro]",
            help="Share a host folder over virtio-fs (repeatable); the tiny guest mounts it "
            "at /mnt/TAG.",
        ),
        click.option(
            "--publish",
            "-p",
            multiple=True,
            metavar="[IP:]HOST:GUEST[/tcp|udp]",
            help="Forward a host port to the guest (repeatable; adds a nat NIC if none; "
            "binds 127.0.0.1 unless an IP is given).",
        ),
        click.option("--rng/--no-rng", default=None, help="virtio-rng device (default on)."),
        click.option("--balloon/--no-balloon", default=None, help="virtio-balloon device."),
        click.option("--marker", type=str, help="Readiness marker (default VMKIT_READY)."),
        click.option(
            "--timeout",
            "ready_timeout",
            type=float,
            help="Seconds to wait for readiness (default 120).",
        ),
        click.option("--driver", type=click.Choice(["auto", *driver_names()])),
        click.option(
            "--accel",
            type=click.Choice(["auto", "kvm", "hvf", "tcg"]),
            help="Accelerator (auto: kvm if usable, else tcg).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def build_spec(name: str | None, o: dict[str, Any]) -> Any:
    from vmkit import spec as specmod

    over: dict[str, Any] = {}
    if name is not None:
        over["name"] = name
    for key, field in (
        ("cpus", "cpus"),
        ("memory", "memory"),
        ("driver", "driver"),
        ("accel", "accelerator"),
        ("guest_arch", "arch"),
    ):
        if o.get(key) is not None:
            over[field] = o[key]
    if o.get("rng") is not None:
        over["rng"] = o["rng"]
    if o.get("balloon") is not None:
        over["balloon"] = o["balloon"]
    nets = list(o.get("nets") or ())
    if o.get("publish") and not any(n in ("nat", "user") for n in nets):
        nets.append("nat")
    if nets:
        if "none" in nets and len(nets) > 1:
            raise InvalidInput("--net none cannot be combined with other --net values")
        over["networks"] = [] if nets == ["none"] else [_net_flag(n) for n in nets]
        nat = next((n for n in over["networks"] if n["mode"] in ("nat", "user")), None)
        if nat is not None and o.get("publish"):
            nat["publish"] = list(o["publish"])
        if o.get("ip") and over["networks"]:
            over["networks"][0]["ip"] = o["ip"]
    elif o.get("ip"):
        raise InvalidInput("--ip needs a NIC: add --net nat or --net switch:NAME")
    if o.get("disks") or o.get("disks_ro") or o.get("new_disks") or o.get("clone_disks"):
        from vmkit.cli_image import clone_source

        over["disks"] = (
            [_disk(p, False) for p in o.get("disks", ())]
            + [_disk(p, True) for p in o.get("disks_ro", ())]
            + [_new_disk(v) for v in o.get("new_disks", ())]
            + [{"clone": clone_source(p)} for p in o.get("clone_disks", ())]
        )
    if o.get("shares"):
        over["shares"] = [_share_flag(v) for v in o["shares"]]
    readiness = {}
    if o.get("marker") is not None:
        readiness["marker"] = o["marker"]
    if o.get("ready_timeout") is not None:
        readiness["timeout"] = o["ready_timeout"]
    boot_flags = {k: o[k] for k in ("kernel", "initrd", "cmdline") if o.get(k) is not None}
    if o.get("spec_file") is not None:
        path: Path = o["spec_file"]
        if readiness:
            over["readiness"] = readiness
        if boot_flags or o.get("efi"):
            raise InvalidInput(
                "give the boot (kernel, initrd, cmdline or kind: efi) in the spec file, not "
                "as flags, with -f"
            )
        return specmod.load_spec_file(path, over)
    if readiness:
        over["readiness"] = readiness
    if "name" not in over:
        raise InvalidInput("a VM name is required (or a spec file with -f)")
    if o.get("efi"):
        if boot_flags:
            raise InvalidInput(
                "--efi boots what the disk holds: drop --kernel, --initrd and --cmdline"
            )
        over["boot"] = {"kind": "efi"}
    elif "kernel" in boot_flags:
        over["boot"] = {
            "kind": "linux",
            **{k: str(v.absolute()) if isinstance(v, Path) else v for k, v in boot_flags.items()},
        }
    else:  # the tiny guest (built on first use), with what the flags add
        over["boot"] = {"kind": "tiny", **{k: str(v) for k, v in boot_flags.items()}}
    return specmod.spec_from_dict(over, base_dir=Path.cwd())


def _new_disk(value: str) -> dict[str, Any]:
    size, _, fmt = value.partition(":")
    if fmt not in ("", "raw", "qcow2"):
        raise InvalidInput(f"--new-disk {value!r}: use SIZE, SIZE:raw or SIZE:qcow2")
    return {"size": size, "format": fmt or "raw"}


def _share_flag(value: str) -> dict[str, Any]:
    host, sep, rest = value.rpartition(":")
    readonly = False
    if rest == "ro" and sep:
        readonly = True
        host, sep, rest = host.rpartition(":")
    if not sep or not host:
        raise InvalidInput(f"--share {value!r}: use HOST_DIR:TAG or HOST_DIR:TAG:ro")
    return {"host": str(Path(host).expanduser().absolute()), "tag": rest, "readonly": readonly}


def _net_flag(value: str) -> dict[str, Any]:
    from vmkit.spec import network_shorthand

    net = network_shorthand(value)
    if net["mode"] not in ("nat", "user", "switch", "tap", "vmnet"):
        raise InvalidInput(
            f"--net {value!r}: use nat, user, switch:NAME, tap:IFNAME[@NETNS], "
            "vmnet:shared|host|bridged:IF (macOS) or none"
        )
    return net


def _disk(path: Path, readonly: bool) -> dict[str, Any]:
    from vmkit.imagefmt import sniff_format

    fmt = "raw"
    with contextlib.suppress(OSError):  # a missing file is reported by the spec check
        fmt = sniff_format(path)
    return {"path": str(path.absolute()), "readonly": readonly, "format": fmt}


@click.command()
@click.argument("name", required=False)
@spec_options
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
def create(name: str | None, as_json: bool, **o: Any) -> None:
    """Record a new VM (nothing runs yet)."""
    spec = build_spec(name, o)
    machine = _host().create(spec)
    if as_json:
        _echo_json(machine.inspect())
    else:
        click.echo(f"created {machine.name} (driver {machine.driver_name})")
        for made in machine.record.disks_made:
            how = (
                f"{made['method']} of {spec.disks[made['index']].clone}, {made['seconds']:.3f}s"
                if made["made"] == "clone"
                else "new empty disk"
            )
            if made.get("method") == "qcow2-overlay":
                how += "; it reads through to the base: keep the base unchanged"
            click.echo(f"  disk{made['index']}: {made['path']} ({how})")
        if seed := machine.record.extra.get("seed_iso"):
            click.echo(f"  cloud-init seed: {seed} (read-only disk)")


@click.command()
@click.argument("name", required=False)
@spec_options
@click.option("--pool", "pool", help="Hand out a ready copy from this warm pool instead.")
@click.option("--json", "as_json", is_flag=True, help=READ_HELP)
@click.option(
    "--wait-for",
    type=click.Choice(["ready", "ssh"]),
    default="ready",
    help="ssh: also wait until a command runs in the guest over SSH.",
)
def run(name: str | None, pool: str | None, as_json: bool, wait_for: str, **o: Any) -> None:
    """Create, start and wait for readiness in one step.

    With no --kernel and no -f, boots the tiny guest (`vmkit guest build`). With --pool,
    hands out a paused copy from a warm pool (`vmkit pool`), resumed, and refills the pool
    in the background.
    """
    t0 = time.monotonic()
    if pool is not None:
        from vmkit.machine.pool import hand_out_then_refill

        if name is not None or any(v not in (None, (), False) for v in o.values()):
            raise InvalidInput("--pool hands out a copy as it is: give no name or spec options")

        def answer(status: Status) -> None:
            report_ready(status, time.monotonic() - t0, as_json)
            sys.stdout.flush()  # the answer first: the filler's start-up competes for the CPU

        warning = hand_out_then_refill(_host().store, pool, answer)
        if warning is not None:
            click.echo(f"warning: {warning}", err=True)
        return
    spec = build_spec(name, o)
    status = _host().run(spec)
    if wait_for == "ssh":
        from vmkit.access.execute import wait_for_ssh

        wait_for_ssh(_host().get(spec.name), spec.readiness.timeout)
    report_ready(status, time.monotonic() - t0, as_json)
