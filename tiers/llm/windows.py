"""Counts over a sliding time window in constant memory, whatever the request rate.

The window is cut into slices; each slice keeps two counts (say, requests and failures), and a
slice leaves the window whole once it is older than the window. An event is therefore counted for
between `window_s` and `window_s` plus one slice: the circuit breakers and the retry budget need
rates, not exact timestamps, and a deque of one timestamp per request grows with the rate (at
2,000 requests/s over a 30 s window: 60,000 entries, about 8 MiB per upstream).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class WindowCounts:
    def __init__(
        self, window_s: float, slices: int = 20, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window_s <= 0 or slices < 1:
            raise ValueError("a window needs a positive length and at least one slice")
        self._width = window_s / slices
        self._slices = slices
        self._clock = clock
        self._counts: deque[list[int]] = deque()  # [slice number, first, second], oldest first
        self._first = 0
        self._second = 0

    def _advance(self) -> int:
        current = int(self._clock() // self._width)
        counts = self._counts
        while counts and counts[0][0] <= current - self._slices:
            _, first, second = counts.popleft()
            self._first -= first
            self._second -= second
        return current

    def add(self, first: int = 0, second: int = 0) -> None:
        current = self._advance()
        if self._counts and self._counts[-1][0] == current:
            entry = self._counts[-1]
            entry[1] += first
            entry[2] += second
        else:
            self._counts.append([current, first, second])
        self._first += first
        self._second += second

    def totals(self) -> tuple[int, int]:
        """(first, second) over the window."""
        self._advance()
        return self._first, self._second

    def clear(self) -> None:
        self._counts.clear()
        self._first = self._second = 0
