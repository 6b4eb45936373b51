"""Host side of the guest agent's control port (virtio-serial `org.vmkit.ctl`, guest/init.sh).

QEMU's `pipe` chardev reads requests from PATH.in and writes the agent's answers to PATH.out
(driver.ctl_fifos). QEMU holds both FIFOs open read-write, so the port never looks
disconnected: a request written while the agent is busy waits in the FIFO (and in QEMU)
until the agent reads it, and nothing is lost when the host goes away. The answer is waited
for with poll(2), no sleeping. Answers to requests whose sender gave up stay in PATH.out:
they are drained before each new request.

Requests (guest/init.sh `ctl_loop`): `ping`; `restored MAC...` after a snapshot restore,
optionally preceded, in the same write, by the note `keep-addr` (restored_request). A note
gets no answer; an agent older than the note ignores the word (it matches no request).
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from pathlib import Path

from vmkit.drivers.qemu.driver import ctl_fifos
from vmkit.errors import VmkitError

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported on the restore path, timed in milliseconds
    from collections.abc import Sequence

    from vmkit.spec_devices import Network

KEEP_ADDR = "keep-addr"
NAT_MODES = ("user", "nat")  # QEMU's user-mode network (slirp): one private NAT per VM


def restored_request(networks: Sequence[Network], own_agent: bool) -> tuple[tuple[str, ...], str]:
    """The notes and the request telling a restored guest its NICs' new MACs.

    A copy whose first NIC (eth0, the one the agent configures) is on QEMU's user-mode NAT
    and takes its address by DHCP keeps that address (note `keep-addr`): each copy has its
    own slirp, so nothing else can hold it, and renewing the lease cost most of the
    restore. On a shared L2 (switch, TAP) copies of one snapshot must each lease their own.
    Only vmkit's own agent (`own_agent`: the tiny guest's /init) gets a note: it keeps the
    port open, while an agent of the user's own that opens it for each read (README's
    example) would lose the request behind the note, since closing a virtio-serial port
    discards what it holds.
    """
    first = networks[0] if networks else None
    keep = own_agent and first is not None and first.mode in NAT_MODES and not first.ip
    notes = (KEEP_ADDR,) if keep else ()
    return notes, " ".join(["restored", *(str(n.mac) for n in networks)])


def request(ctl: Path | str, line: str, timeout: float, notes: Sequence[str] = ()) -> str:
    """Send one request line, after `notes` (lines the agent takes without answering), all
    in one write; return the agent's one-line answer (without the newline)."""
    lines = [*notes, line]
    if any("\n" in item or "\r" in item for item in lines):  # one request per line, always
        raise ValueError(f"a control-port line cannot hold a line break: {lines!r}")
    data = "".join(f"{item}\n" for item in lines).encode()
    fifos = ctl_fifos(Path(ctl))
    try:
        out_fd = os.open(fifos["ctl.out"], os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise VmkitError(f"the VM has no control port FIFO {fifos['ctl.out']}") from None
    try:
        _drain(out_fd)
        try:  # ENXIO: nobody reads PATH.in, i.e. QEMU is gone
            in_fd = os.open(fifos["ctl.in"], os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise VmkitError(f"the VM's control port is not open ({exc.strerror})") from None
        try:
            os.write(in_fd, data)  # a few bytes: one atomic FIFO write
        finally:
            os.close(in_fd)
        return _read_line(out_fd, time.monotonic() + timeout)
    finally:
        os.close(out_fd)


def answered_address(answer: str) -> str | None:
    """The address in the agent's answer `ok <ip>|-` ("-": the guest has none), or None
    for anything else, as the readiness line's address is read."""
    from vmkit.readiness import guest_address

    word, _, addr = answer.partition(" ")
    return guest_address(addr) if word == "ok" else None


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass


def _read_line(fd: int, deadline: float) -> str:
    buf = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise VmkitError("the guest agent did not answer on its control port in time")
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:  # no writer left: QEMU exited
            raise VmkitError("the VM's control port closed before the guest agent answered")
        buf += chunk
    return buf.split(b"\n", 1)[0].decode(errors="replace")
