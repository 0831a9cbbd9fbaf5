"""`send --at WHEN`: parsing, the countdown wait, the past refused, Ctrl-C while waiting."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import SAMPLES
from newsletter.config import load_config
from newsletter.errors import ValidationError
from newsletter.store.ledger import Ledger
from newsletter.send.schedule import format_remaining, parse_when, wait_until
from newsletter.store import open_store

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def test_parse_when_with_offsets_and_utc():
    assert parse_when("2026-11-23T07:00+08:00", now=NOW) == datetime(2026, 11, 22, 23, 0, tzinfo=timezone.utc)
    assert parse_when("2026-11-23T07:00:30Z", now=NOW) == datetime(2026, 11, 23, 7, 0, 30, tzinfo=timezone.utc)
    local = parse_when("2026-11-24 07:00", now=NOW)
    assert local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2026, 11, 24, 7, 0)


@pytest.mark.parametrize("text,message", [
    ("2026-11-22T19:59+08:00", "is in the past"),
    ("2020-01-01T00:00Z", "is in the past"),
    ("tomorrow morning", r"expected a date and time like 2026-11-23T07:00\+08:00"),
    ("2026-13-01T00:00Z", "expected a date and time"),
])
def test_parse_when_refuses_the_past_and_nonsense(text, message):
    with pytest.raises(ValidationError, match=message):
        parse_when(text, now=NOW)


def test_wait_until_counts_down_on_the_wall_clock():
    clock = [1000.0]
    ticks: list[float] = []

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    wait_until(datetime.fromtimestamp(1003.5, timezone.utc), tick=ticks.append, sleep=sleep, clock=lambda: clock[0])
    assert clock[0] == pytest.approx(1003.5)
    assert ticks == pytest.approx([3.5, 2.5, 1.5, 0.5])


def test_wait_until_follows_a_clock_jump():
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += 500 if clock[0] == 0 else seconds  # the machine slept through most of it

    wait_until(datetime.fromtimestamp(600, timezone.utc), sleep=sleep, clock=lambda: clock[0])
    assert 600 <= clock[0] <= 601


def test_format_remaining():
    assert format_remaining(0.2) == "00:00:01"
    assert format_remaining(3725) == "01:02:05"
    assert format_remaining(90061) == "1d 01:01:01"


@pytest.fixture
def edition(project):
    (project / "editions").mkdir(exist_ok=True)
    shutil.copy(SAMPLES / "2025-10-14-ai-digest.md", project / "editions" / "2025-10-14.md")
    with open_store(load_config()) as store:
        store.create_list("daily")
        store.add_subscriber("ada@example.com", name="Ada", lists=["daily"])
    return "editions/2025-10-14.md"


def test_at_in_the_past_is_a_clear_error(project, edition, cli):
    result = cli("send", edition, "--list", "daily", "--yes", "--at", "2020-01-01T07:00+08:00")
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: --at '2020-01-01T07:00+08:00' is in the past")
    assert not (project / "outbox").exists()


def test_at_waits_then_sends(project, edition, cli):
    when = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat(timespec="seconds")
    started = time.monotonic()
    result = cli("send", edition, "--list", "daily", "--yes", "--at", when)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 1.0
    assert "(Ctrl-C cancels)" in result.output and "sent 1, failed 0" in result.output
    assert len(list((project / "outbox" / "2025-10-14" / "new").iterdir())) == 1


def test_ctrl_c_while_waiting_cancels_with_130(project, edition):
    when = (datetime.now(timezone.utc) + timedelta(hours=3)).isoformat(timespec="minutes")
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "send", edition, "--list", "daily", "--yes",
                             "--at", when], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 60
    line = ""
    while "Ctrl-C cancels" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
    assert "sending at" in line and "in 02:5" in line or "in 03:00" in line
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=20)[0]
    assert proc.returncode == 130 and "interrupted" in rest
    assert not (project / "outbox").exists()
    with Ledger.open(load_config()) as ledger:
        assert ledger.sends() == []
