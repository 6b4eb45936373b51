"""What real Cloud Hypervisor leaves in its own files, read from logs the real v54 binary
wrote on the CI machine (tests/unit/fixtures/ch-*): a vCPU crash, a seccomp kill."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vmkit.drivers import ch_facts
from vmkit.drivers.base import LaunchContext
from vmkit.drivers.ch_api import error_text
from vmkit.drivers.cloud_hypervisor import CloudHypervisorDriver

FIX = Path(__file__).parent / "fixtures"


def _ctx(tmp_path: Path, name: str) -> LaunchContext:
    shutil.copy(FIX / f"ch-{name}.vmm.log", tmp_path / "vmm.log")
    events = FIX / f"ch-{name}.events.log"
    if events.exists():
        shutil.copy(events, tmp_path / "vmm-events.log")
    return LaunchContext(tmp_path, tmp_path / "serial.log", tmp_path / "vmm-events.log", {}, "kvm")


def test_a_vcpu_crash_is_not_a_guest_poweroff(tmp_path):
    """Bug A: CH ends a vCPU error with vm:shutdown / vm:deleted / vmm:shutdown, exactly the
    events of a poweroff; only vmm.log's `VCPU generated error` tells them apart."""
    ctx = _ctx(tmp_path, "vcpu-error")
    from vmkit.drivers.cloud_hypervisor import read_events

    names = [e["event"] for e in read_events(ctx.events_log)]
    assert names[-3:] == ["shutdown", "deleted", "shutdown"]  # what a poweroff also ends with
    cause = CloudHypervisorDriver().exit_cause(ctx)
    assert cause is not None and not cause.clean
    assert cause.reason == "vCPU error (vCPU run failed: InternalError)"


def test_an_earlier_runs_crash_does_not_count(tmp_path):
    _ctx(tmp_path, "vcpu-error")
    with (tmp_path / "vmm.log").open("a") as f:
        f.write("--- vmkit: starting crash at later ---\n")
    assert ch_facts.crash_in_log(tmp_path / "vmm.log") is None


def test_a_seccomp_kill_in_the_migration_worker_is_named(tmp_path):
    reason = ch_facts.crash_in_log(_ctx(tmp_path, "migration-seccomp").vm_dir / "vmm.log")
    assert reason is not None and "seccomp violation" in reason
    assert "syscall 262 in thread migration-worke" in reason


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (["vm:booted"], None),
        (["vm:migration-started", "vm:pausing"], None),
        (["vm:migration-started", "vm:migration-failed"], "failed"),
        (["vm:migration-started", "vm:migration-failed", "vm:migration-started"], None),
        (["vm:migration-started", "vm:snapshotted", "vm:migration-finished"], "finished"),
    ],
)
def test_migration_result_from_the_event_monitor(events, expected):
    parsed = [dict(zip(("source", "event"), e.split(":"), strict=True)) for e in events]
    assert ch_facts.migration_result(parsed) == expected


def test_chs_json_array_error_becomes_its_cause_chain():
    body = '["Error from API","The VM could not resume","VM is not running"]'
    assert error_text(body) == "The VM could not resume: VM is not running"
    traced = json.dumps(
        ["Error from API", "Cannot boot\n\nStack backtrace:\n   0: <unknown>", "Stack backtrace:"]
    )
    assert error_text(traced) == "Cannot boot"
    assert error_text("plain text") == "plain text"
