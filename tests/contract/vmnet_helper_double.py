#!/usr/bin/env python3
"""TEST DOUBLE for vmnet-helper (nirs/vmnet-helper; vmnet.framework exists only on macOS).
Never evidence that a vmnet network works: it only speaks the helper's documented interface
(docs/integration.md, socket mode) so vmkit's start/stop/gc of the helper and the NIC it
hands the VMM can be exercised here.

As a program (`vmnet_helper_double.py ARGS`, named by $VMKIT_VMNET_HELPER in the tests) it:
- takes `--socket PATH --interface-id UUID --operation-mode shared|host|bridged
  [--shared-interface IF]`, refusing anything else (bridged needs --shared-interface);
- binds a Unix datagram socket at PATH, logs `INFO [main] ...` lines to stderr like the
  helper, and prints one JSON line describing the interface (vmnet_mac_address, addresses,
  MTU, the interface id) on stdout;
- serves the first client that sends a packet (logs `serving client`);
- exits 0 on SIGTERM/SIGINT, removing the socket;
- with $VMNET_DOUBLE=needs-password, fails as `sudo --non-interactive` does without the
  sudoers rule (`sudo: a password is required`, exit 1);
- appends its argv as JSON to $VMNET_DOUBLE_LOG when set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import sys
from pathlib import Path


def log(msg: str) -> None:
    print(f"INFO  [main] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if os.environ.get("VMNET_DOUBLE_LOG"):
        with open(os.environ["VMNET_DOUBLE_LOG"], "a") as f:
            f.write(json.dumps(argv) + "\n")
    if os.environ.get("VMNET_DOUBLE") == "needs-password":
        print("sudo: a password is required", file=sys.stderr)
        return 1
    parser = argparse.ArgumentParser(prog="vmnet-helper")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--interface-id", required=True)
    parser.add_argument("--operation-mode", choices=["shared", "host", "bridged"], required=True)
    parser.add_argument("--shared-interface")
    args = parser.parse_args(argv)
    if (args.operation_mode == "bridged") != (args.shared_interface is not None):
        print("ERROR [main] bridged mode needs --shared-interface (and only it)", file=sys.stderr)
        return 1
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(args.socket)
    log("started vmnet interface")
    digest = hashlib.sha256(args.interface_id.encode()).digest()
    info = {
        "vmnet_subnet_mask": "255.255.255.0",
        "vmnet_mtu": 1500,
        "vmnet_end_address": "192.168.105.254",
        "vmnet_start_address": "192.168.105.1",
        "vmnet_interface_id": args.interface_id,
        "vmnet_max_packet_size": 1514,
        "vmnet_mac_address": "0a:" + ":".join(f"{b:02x}" for b in digest[:5]),
    }
    print(json.dumps(info), flush=True)
    log(f'waiting for client on "{args.socket}"')

    def on_signal(signum: int, frame: object) -> None:
        Path(args.socket).unlink(missing_ok=True)
        log("terminated")
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _, client = sock.recvfrom(65536)
    log(f'serving client "{client}"')
    while True:
        sock.recvfrom(65536)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
