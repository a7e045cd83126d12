"""Guards around an upstream: a retry budget, so an outage cannot become a retry storm, and a
bulkhead, so one slow upstream cannot take every connection and task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tiers.llm.windows import WindowCounts


class RetryBudget:
    """Retries may be at most `ratio` of the requests of the last `window_s` seconds, plus a floor
    of `min_per_s` per second so a quiet upstream can still be retried."""

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_s: float = 1.0,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._floor = min_per_s * window_s
        self._counts = WindowCounts(window_s, clock=clock)  # (requests, retries)

    def record_request(self) -> None:
        self._counts.add(1, 0)

    def try_retry(self) -> bool:
        requests, retries = self._counts.totals()
        if retries >= self._floor + self._ratio * requests:
            return False
        self._counts.add(0, 1)
        return True


class Bulkhead:
    """At most `limit` calls at once; a call waits up to `queue_timeout_s` for a place."""

    def __init__(self, limit: int | None, queue_timeout_s: float) -> None:
        self._slots = asyncio.Semaphore(limit) if limit else None
        self._timeout = queue_timeout_s

    async def enter(self) -> bool:
        if self._slots is None:
            return True
        if not self._slots.locked():  # a free place: taken at once, without a timer or a task
            await self._slots.acquire()
            return True
        try:
            await asyncio.wait_for(self._slots.acquire(), self._timeout)
        except TimeoutError:
            return False
        return True

    def leave(self) -> None:
        if self._slots is not None:
            self._slots.release()
