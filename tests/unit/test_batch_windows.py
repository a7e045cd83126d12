"""Batch windows: times of day in a time zone, windows that pass midnight."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.batch.windows import in_window


def at(hour: int, minute: int, zone: str = "UTC") -> float:
    return datetime(2026, 12, 3, hour, minute, tzinfo=ZoneInfo(zone)).timestamp()


def test_windows_of_the_day_in_their_time_zone() -> None:
    assert in_window(at(12, 0), [], "UTC")  # none: always
    assert in_window(at(23, 30), ["22:00-06:00"], "UTC")
    assert in_window(at(5, 59), ["22:00-06:00"], "UTC")
    assert not in_window(at(6, 0), ["22:00-06:00"], "UTC")
    assert in_window(at(13, 0), ["09:00-10:00", "12:30-14:00"], "UTC")
    assert not in_window(at(11, 0), ["09:00-10:00", "12:30-14:00"], "UTC")
    # 23:00 in New York is 04:00 the next day in UTC
    assert in_window(at(23, 0, "America/New_York"), ["22:00-06:00"], "America/New_York")
    assert not in_window(at(23, 0, "America/New_York"), ["22:00-23:30"], "UTC")
