"""``send --at WHEN``: parse the moment and wait for it, showing a countdown.

WHEN is ISO 8601 (``2026-11-23T07:00+08:00``, ``2026-11-23 07:00``, ``…Z``); without an offset it
is the local time of this machine. Waiting re-reads the wall clock every second, so a machine
that sleeps or has its clock adjusted still starts at the right moment. Ctrl-C while waiting
raises ``KeyboardInterrupt`` (the CLI exits 130); nothing has been written by then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

from newsletter.errors import ValidationError


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """The aware datetime ``text`` names; ``ValidationError`` when unreadable or in the past."""
    raw = text.strip()
    try:
        when = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise ValidationError(f"--at {text!r}: expected a date and time like 2026-11-23T07:00+08:00") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time of this machine
    current = now or datetime.now(timezone.utc)
    if when <= current:
        raise ValidationError(f"--at {text!r} is in the past (it is now {current.astimezone():%Y-%m-%d %H:%M:%S %z})")
    return when


def format_remaining(seconds: float) -> str:
    """``1d 02:03:04`` / ``02:03:04``."""
    total = max(0, int(seconds + 0.999))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def wait_until(when: datetime, *, tick: Callable[[float], None] | None = None,
               sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.time) -> None:
    """Block until ``when``; ``tick(seconds_left)`` about once a second."""
    target = when.timestamp()
    while True:
        left = target - clock()
        if left <= 0:
            return
        if tick is not None:
            tick(left)
        sleep(min(1.0, left))
