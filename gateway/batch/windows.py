"""When batch lines that need an LLM may run: inside configured windows of the day."""

from __future__ import annotations

import zoneinfo
from datetime import datetime, time


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def in_window(now: float, windows: list[str], timezone: str) -> bool:
    """Whether `now` (epoch seconds) falls in one of `windows` ("HH:MM-HH:MM", which may pass
    midnight) in `timezone`; with no windows, always."""
    if not windows:
        return True
    local: time = datetime.fromtimestamp(now, zoneinfo.ZoneInfo(timezone)).time()
    minute = local.hour * 60 + local.minute
    for window in windows:
        start, end = (_minutes(part) for part in window.split("-"))
        if start <= end and start <= minute < end:
            return True
        if start > end and (minute >= start or minute < end):
            return True
    return False
