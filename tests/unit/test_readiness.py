"""readiness.py: the incremental serial-log follower and tail_lines."""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmkit import readiness as readiness_mod
from vmkit.readiness import MAX_LINE, ReadinessFollower, Ready, tail_lines

MARKER = "VMKIT_READY"


class Log:
    def __init__(self, path: Path):
        self.path = path
        self.follower = ReadinessFollower(path, MARKER)

    def append(self, data: bytes | str) -> Ready | None:
        with self.path.open("ab") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return self.follower.poll()


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return Log(tmp_path / "serial.log")


def test_missing_log_is_not_ready(tmp_path: Path) -> None:
    assert ReadinessFollower(tmp_path / "nope.log", MARKER).poll() is None


def test_empty_log_is_not_ready(log: Log) -> None:
    assert log.append("") is None
    assert log.follower.offset == 0


def test_readiness_line_is_found_with_ip_and_offset(log: Log) -> None:
    head = "booting\nstill booting\n"
    ready = log.append(head + "VMKIT_READY 10.0.2.15\nafter\n")
    assert ready == Ready("10.0.2.15", len(head) + len("VMKIT_READY 10.0.2.15\n"))


def test_marker_split_across_two_appends_is_found(log: Log) -> None:
    assert log.append("boot\nVMKIT_RE") is None
    assert log.append("ADY 192.168.1.7\n") == Ready(
        "192.168.1.7", len("boot\nVMKIT_READY 192.168.1.7\n")
    )


def test_a_line_only_counts_once_its_newline_arrives(log: Log) -> None:
    assert log.append("VMKIT_READY 10.0.2.1") is None
    assert log.follower.rejected == []
    ready = log.append("5\n")
    assert ready is not None
    assert ready.ip == "10.0.2.15"


def test_dash_means_ready_without_an_address(log: Log) -> None:
    ready = log.append("VMKIT_READY -\n")
    assert ready == Ready(None, len("VMKIT_READY -\n"))


def test_marker_may_follow_a_console_prefix(log: Log) -> None:
    ready = log.append("[    1.234] init: VMKIT_READY 10.0.2.15 extra words\n")
    assert ready is not None
    assert ready.ip == "10.0.2.15"


@pytest.mark.parametrize(
    "line",
    [
        "VMKIT_READY 999.1.1.1",
        "VMKIT_READY abc",
        "VMKIT_READY",
        "VMKIT_READY   ",
        "VMKIT_READY 10.0.2",
    ],
)
def test_invalid_addresses_are_rejected_and_recorded(log: Log, line: str) -> None:
    assert log.append(line + "\n") is None
    assert log.follower.rejected == [line.strip()]
    ready = log.append("VMKIT_READY 10.0.2.15\n")
    assert ready is not None
    assert ready.ip == "10.0.2.15"


def test_marker_with_a_suffix_does_not_match(log: Log) -> None:
    assert log.append("VMKIT_READYX 1.2.3.4\n") is None
    assert log.follower.rejected == []


def test_marker_with_a_colon_suffix_does_not_match(log: Log) -> None:
    assert log.append("VMKIT_READY:1.2.3.4\n") is None


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("fe80::1", "fe80::1"), ("2001:DB8:0:0::1", "2001:db8::1"), ("::1", "::1")],
)
def test_ipv6_addresses_are_accepted_and_normalised(log: Log, addr: str, expected: str) -> None:
    ready = log.append(f"VMKIT_READY {addr}\n")
    assert ready is not None
    assert ready.ip == expected


def test_crlf_line_endings(log: Log) -> None:
    assert log.append("boot\r\nVMKIT_READY 10.0.2.15\r") is None
    ready = log.append("\nmore\r\n")
    assert ready == Ready("10.0.2.15", len("boot\r\nVMKIT_READY 10.0.2.15\r\n"))


def test_tab_separates_marker_and_address(log: Log) -> None:
    ready = log.append("VMKIT_READY\t10.0.2.15\n")
    assert ready is not None
    assert ready.ip == "10.0.2.15"


def test_custom_marker(tmp_path: Path) -> None:
    path = tmp_path / "serial.log"
    path.write_text("VMKIT_READY 1.1.1.1\nGUEST-UP:1 10.1.2.3\n")
    follower = ReadinessFollower(path, "GUEST-UP:1")
    assert follower.poll() == Ready("10.1.2.3", path.stat().st_size)


def test_first_of_several_readiness_lines_wins(log: Log) -> None:
    ready = log.append("VMKIT_READY 1.1.1.1\nVMKIT_READY 2.2.2.2\n")
    assert ready == Ready("1.1.1.1", len("VMKIT_READY 1.1.1.1\n"))


def test_invalid_utf8_does_not_break_the_follower(log: Log) -> None:
    assert log.append(b"\xff\xfe garbage \xc3\n") is None
    ready = log.append(b"VMKIT_READY 10.0.2.15\n")
    assert ready is not None
    assert ready.ip == "10.0.2.15"


def test_truncated_log_restarts_from_zero(log: Log) -> None:
    assert log.append("a long first boot without a marker\n" * 5) is None
    assert log.follower.offset > 0
    log.path.write_text("VMKIT_READY 10.9.8.7\n")  # restarted VM: new, shorter log
    ready = log.follower.poll()
    assert ready == Ready("10.9.8.7", len("VMKIT_READY 10.9.8.7\n"))


def test_truncation_drops_the_unfinished_line(log: Log) -> None:
    assert log.append("x" * 100 + "VMKIT_RE") is None
    log.path.write_text("ADY 1.2.3.4\n")  # must not be glued to the old partial line
    assert log.follower.poll() is None


def test_offset_tracks_bytes_consumed(log: Log) -> None:
    log.append("one\ntwo")
    assert log.follower.offset == len("one\ntwo")
    log.append("\n")
    assert log.follower.offset == len("one\ntwo\n")


class _RecordingOs:
    """Stands in for the os module inside vmkit.readiness, recording os.read calls."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []  # (position, requested size)

    def read(self, fd: int, n: int) -> bytes:
        self.reads.append((os.lseek(fd, 0, os.SEEK_CUR), n))
        return os.read(fd, n)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_follower_never_rereads_bytes(log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _RecordingOs()
    monkeypatch.setattr(readiness_mod, "os", recorder)
    first = "kernel: hello\n" * 50 + "VMKIT_REA"
    assert log.append(first) is None
    assert log.follower.poll() is None  # nothing new: no read at all
    assert log.append("DY 10.0.2.15\n") is not None
    assert recorder.reads == [(0, len(first)), (len(first), len("DY 10.0.2.15\n"))]


def test_a_very_long_line_keeps_memory_bounded(log: Log) -> None:
    assert log.append("x" * (MAX_LINE * 4)) is None
    assert len(log.follower._partial) <= MAX_LINE
    ready = log.append(" VMKIT_READY 10.0.2.15\n")
    assert ready is not None
    assert ready.offset == MAX_LINE * 4 + len(" VMKIT_READY 10.0.2.15\n")


# ---- property: arbitrary chunking ----------------------------------------------------------

noise_line = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"),
    max_size=40,
).filter(lambda s: MARKER not in s)


@settings(max_examples=150, deadline=None)
@given(
    before=st.lists(noise_line, max_size=6),
    after=st.lists(noise_line, max_size=3),
    ip=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_readiness_found_exactly_once_at_any_chunking(
    before: list[str], after: list[str], ip: Any, cuts: list[int]
) -> None:
    head = "".join(line + "\n" for line in before).encode()
    ready_line = f"{MARKER} {ip}\n".encode()
    data = head + ready_line + "".join(line + "\n" for line in after).encode()
    end_of_ready = len(head) + len(ready_line)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "serial.log"
        path.touch()
        follower = ReadinessFollower(path, MARKER)
        found: list[tuple[int, Ready]] = []
        for lo, hi in itertools.pairwise(bounds):
            with path.open("ab") as f:
                f.write(data[lo:hi])
            ready = follower.poll()
            if ready is not None:
                found.append((hi, ready))
        assert len(found) == 1
        written, ready = found[0]
        assert written >= end_of_ready  # never before the newline arrived
        assert ready == Ready(str(ip), end_of_ready)
        assert follower.rejected == []


# ---- tail_lines ----------------------------------------------------------------------------


def test_tail_lines_returns_the_last_n(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail_lines(path, 3) == ["line 97", "line 98", "line 99"]


def test_tail_lines_of_a_short_file_returns_all(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("a\r\nb\n\n\n")
    assert tail_lines(path, 20) == ["a", "b"]


def test_tail_lines_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert tail_lines(tmp_path / "missing") == []


def test_tail_lines_of_an_empty_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"")
    assert tail_lines(path) == []


def test_tail_lines_reads_only_the_end_of_big_files(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("first line\n" + "y" * 10_000 + "\nlast\n")
    lines = tail_lines(path, 100, max_bytes=100)
    assert lines[-1] == "last"
    assert "first line" not in lines


@pytest.mark.parametrize(
    ("line", "ip"),
    [
        ("VMKIT_READY -[    1.840000] tsc: Refined TSC clocksource calibration", None),
        ("VMKIT_READY 10.0.2.15[    1.84] tsc: Refined TSC", "10.0.2.15"),
        ("[    1.84] tsc: Refined TSC clocksource calibrationVMKIT_READY 10.0.2.15", "10.0.2.15"),
        ("[    1.84] random: crng init VMKIT_READY - done", None),
        ("VMKIT_READYX 1.2.3.4 and later VMKIT_READY 10.0.2.16", "10.0.2.16"),
    ],
)
def test_marker_found_when_kernel_messages_share_its_line(
    log: Log, line: str, ip: str | None
) -> None:
    """Issue 15 item 13: `VMKIT_READY -[ 1.84] tsc: ...` was missed (2 of 14 boots)."""
    ready = log.append(line + "\n")
    assert ready is not None and ready.ip == ip
