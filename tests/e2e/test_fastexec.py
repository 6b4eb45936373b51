"""A warm `vmkit exec` runs through access.fastexec (no click, no library) on the VM's open
SSH connection, with the full path's behaviour, and steps aside whenever it cannot be sure:
real tiny guest (dropbear) under QEMU TCG, through the console script's entry point."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from vmkit.access import fastexec
from vmkit.store import Store

PROBE = """
import sys
from vmkit.access import fastexec
rc = fastexec.run(sys.argv[1:])
sys.stderr.write(f"\\nFAST {rc} {'click' in sys.modules}\\n")
"""


def fast(cli, *args: str) -> tuple[int | None, subprocess.CompletedProcess[str]]:
    """fastexec.run alone: its answer (None: it declined) and what the command printed."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], env=cli.env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    *rest, last = proc.stderr.rstrip("\n").split("\n")
    word, rc, click_loaded = last.split()
    assert word == "FAST" and click_loaded == "False", proc.stderr
    proc.stderr = "\n".join(rest).removesuffix("\n") + ("\n" if rest and rest != [""] else "")
    return (None if rc == "None" else int(rc)), proc


@pytest.mark.capability("qemu", "guest_exec")
def test_a_warm_exec_takes_the_fast_path_and_steps_aside_when_unsure(cli, guest):
    cli.ok("run", "box", "--net", "none", "--accel", "tcg", timeout=300)
    recipe = Store(cli.home).vm_dir("box") / fastexec.RECIPE
    assert fast(cli, "box", "--", "true")[0] is None  # no full-path exec yet: no recipe
    cli.ok("exec", "box", "--", "true")  # opens the master; leaves the recipe
    assert recipe.stat().st_mode & 0o777 == 0o600

    rc, proc = fast(cli, "box", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (rc, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    rc, proc = fast(cli, "box", "no-such-command")
    assert rc == 127 and "not found" in proc.stderr and "VMKIT_PID" not in proc.stderr
    assert fast(cli, "box", "-i", "--", "true")[0] is None  # options: the full path

    # through the console script's entry: statuses and Ctrl-C/TERM reach the guest command
    proc = cli("exec", "box", "--", "sh", "-c", 'echo "$0 it\'s"; exit 4', "a b")
    assert (proc.returncode, proc.stdout) == (4, "a b it's\n")
    trap = 'trap "echo got-int; exit 9" INT; echo ready; while :; do sleep 0.1; done'
    for sig, script, want_rc, want_out in [
        (signal.SIGINT, trap, 9, "ready\ngot-int\n"),
        (signal.SIGTERM, "echo ready; exec sleep 600", 128 + signal.SIGTERM, "ready\n"),
    ]:
        p = subprocess.Popen([sys.executable, "-m", "vmkit", "exec", "box", "--", "sh", "-c",
                              script], env=cli.env, stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        p.send_signal(sig)
        rest = p.stdout.read()
        assert (p.wait(60), "ready\n" + rest) == (want_rc, want_out)
    assert "sleep 600" not in cli.ok("exec", "box", "--", "ps").stdout

    # paused: the recipe is dropped (an exec must not hang); the full path says why
    cli.ok("pause", "box")
    assert not recipe.exists() and fast(cli, "box", "--", "true")[0] is None
    proc = cli("exec", "box", "--", "true")
    assert proc.returncode != 0 and "paused" in proc.stderr
    cli.ok("resume", "box")
    cli.ok("exec", "box", "--", "true")
    assert fast(cli, "box", "--", "true")[0] == 0

    # the master gone: declined, and the full path reopens it
    from vmkit.machine import Host

    Host(cli.home).get("box").connection().close_master()
    assert fast(cli, "box", "--", "true")[0] is None
    assert cli("exec", "box", "--", "true").returncode == 0
    assert fast(cli, "box", "--", "true")[0] == 0

    # stopped: declined (its VMM is gone), and the full path says so
    cli.ok("kill", "box")
    assert fast(cli, "box", "--", "true")[0] is None
    proc = cli("exec", "box", "--", "true")
    assert proc.returncode != 0 and "not running" in proc.stderr
