"""Guards around an upstream: a retry budget, so an outage cannot become a retry storm, and a
bulkhead, so one slow upstream cannot take every connection and task."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Callable

from tiers.lanes import RANK, Lane
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
    """At most `limit` calls at once; a call waits up to `queue_timeout_s` for a place. Waiting
    calls get places in lane order (first come first served within a lane), and a `background`
    call never takes the last `reserved` places, which are kept for critical work."""

    def __init__(self, limit: int | None, queue_timeout_s: float, reserve_for_critical: float = 0.0) -> None:
        self._limit = limit
        self._free = limit or 0
        self._reserved = min(limit - 1, math.ceil(limit * reserve_for_critical)) if limit else 0
        self._timeout = queue_timeout_s
        self._waiting: list[tuple[int, int, asyncio.Future[None], Lane]] = []  # a heap
        self._order = itertools.count()

    def _may_take(self, lane: Lane) -> bool:
        return self._free > (self._reserved if lane == "background" else 0)

    async def enter(self, lane: Lane = "normal") -> bool:
        if self._limit is None:
            return True
        if self._may_take(lane) and not self._ahead_of(lane):  # a free place: taken at once
            self._free -= 1
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (RANK[lane], next(self._order), waiter, lane)
        heapq.heappush(self._waiting, entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._timeout)
        except TimeoutError:
            self._give_up(entry)
            return False
        except asyncio.CancelledError:
            self._give_up(entry)
            raise
        return True

    def _give_up(self, entry: tuple[int, int, asyncio.Future[None], Lane]) -> None:
        waiter = entry[2]
        if waiter.done() and not waiter.cancelled():  # given a place just as it gave up: pass it on
            self.leave()
            return
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiting.remove(entry)
            heapq.heapify(self._waiting)

    def _ahead_of(self, lane: Lane) -> bool:
        """Someone of the same or a higher lane waits already."""
        return any(rank <= RANK[lane] and not waiter.done() for rank, _, waiter, _ in self._waiting)

    def leave(self) -> None:
        if self._limit is None:
            return
        self._free += 1
        while self._waiting:
            _, _, waiter, lane = self._waiting[0]
            if waiter.done():  # gave up waiting
                heapq.heappop(self._waiting)
                continue
            if not self._may_take(lane):
                # the first in line is background and only reserved places are free: it waits,
                # and so does every later one (all background)
                return
            heapq.heappop(self._waiting)
            self._free -= 1
            waiter.set_result(None)
            return
