"""The cache step of the request path: the client's cache controls, lookups, and single-flight.

Concurrent identical misses share one computation: in one process the first becomes the leader
and the others await its result; across processes (Redis) the leader holds a short lock and the
others poll for its result for a bounded time, then compute themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.cache.backends import Cache, CachedAnswer
from gateway.errors import BadRequest

LOCK_TTL_S = 30.0  # a leader that dies releases its lock at the latest after this
POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class CacheControl:
    read: bool = True
    write: bool = True
    ttl_s: float | None = None

    @classmethod
    def from_headers(cls, cache_control: str | None, ttl: str | None) -> CacheControl:
        directives = {d.strip().lower() for d in (cache_control or "").split(",")}
        ttl_s = None
        if ttl is not None:
            try:
                ttl_s = float(ttl)
            except ValueError:
                ttl_s = -1.0
            if not 0 < ttl_s <= 30 * 86400:
                raise BadRequest(
                    "x-tiergate-cache-ttl must be a number of seconds between 0 and 2592000",
                    param="x-tiergate-cache-ttl",
                )
        if "no-store" in directives:
            return cls(read=False, write=False, ttl_s=ttl_s)
        return cls(read="no-cache" not in directives, write=True, ttl_s=ttl_s)


DEFAULT_CONTROL = CacheControl()


class Flight:
    """One cacheable request's place in its key's single flight."""

    def __init__(self, owner: ResponseCache, key: str, leader: bool, locked: bool) -> None:
        self._owner = owner
        self.key = key
        self.leader = leader
        self._locked = locked
        self._done = False

    async def land(self, answer: CachedAnswer | None, ttl_s: float | None, write: bool) -> None:
        """The leader's result: stored (when there is one and writing is allowed) and handed to
        the requests waiting on it. Idempotent, so every way out of a request may call it."""
        if self._done or not self.leader:
            return
        self._done = True
        try:
            if answer is not None and write:
                await self._owner.cache.set(self.key, answer, ttl_s or self._owner.ttl_s)
        finally:
            self._owner._release(self.key, answer, self._locked)


class ResponseCache:
    def __init__(self, cache: Cache, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cache = cache
        self.ttl_s = ttl_s
        self._clock = clock
        self._waiting: dict[str, asyncio.Future[CachedAnswer | None]] = {}

    async def lookup(
        self, key: str, control: CacheControl, wait_s: float
    ) -> tuple[CachedAnswer | None, Flight]:
        """A cached (or concurrently computed) answer, or the flight this request now leads."""
        if control.read:
            found = await self.cache.get(key)
            if found is not None:
                return found, Flight(self, key, leader=False, locked=False)
            pending = self._waiting.get(key)
            if pending is not None:
                try:
                    shared = await asyncio.wait_for(asyncio.shield(pending), wait_s)
                except TimeoutError:
                    shared = None
                if shared is not None:
                    return shared, Flight(self, key, leader=False, locked=False)
        if key not in self._waiting:
            self._waiting[key] = asyncio.get_running_loop().create_future()
        locked = await self.cache.lock(key, LOCK_TTL_S)
        if not locked and control.read:
            deadline = self._clock() + wait_s
            while self._clock() < deadline:  # another process is computing it
                await asyncio.sleep(POLL_S)
                found = await self.cache.get(key)
                if found is not None:
                    self._release(key, found, locked=False)
                    return found, Flight(self, key, leader=False, locked=False)
        return None, Flight(self, key, leader=True, locked=locked)

    def _release(self, key: str, answer: CachedAnswer | None, locked: bool) -> None:
        pending = self._waiting.pop(key, None)
        if pending is not None and not pending.done():
            pending.set_result(answer)
        if locked:
            task = asyncio.ensure_future(self.cache.unlock(key))
            task.add_done_callback(lambda t: t.exception())
