"""The response cache: an exact key over everything that can change an answer, behind one interface."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
from cachetools import TLRUCache
from redis.exceptions import RedisError

from budgets.redis_client import StateClient
from tiers.types import ChatRequest, Usage

# Fields that cannot change the answer, left out of the key.
_NOT_IN_KEY = {"stream": False, "stream_options": None, "user": None, "metadata": None, "store": None}


class CachedAnswer(msgspec.Struct):
    tier: str
    content: str | None
    body: bytes = b""  # the exact response body, when the answer was not streamed
    confidence: float = 1.0
    usage: Usage = msgspec.field(default_factory=Usage)


class Cache(Protocol):
    async def get(self, key: str) -> CachedAnswer | None: ...

    async def set(self, key: str, value: CachedAnswer, ttl_s: float) -> None: ...

    async def lock(self, key: str, ttl_s: float) -> bool:
        """Claim the computation of `key` across processes; True when this caller should compute."""
        ...

    async def unlock(self, key: str) -> None: ...

    async def close(self) -> None: ...


def cache_key(request: ChatRequest, scope: str, agent: str) -> str:
    """sha256 of a canonical encoding: msgspec encodes struct fields in declaration order and
    `order="sorted"` sorts every free-form mapping, so the key is independent of the client's
    JSON key order."""
    canonical = msgspec.structs.replace(request, **_NOT_IN_KEY)  # type: ignore[arg-type]
    payload = msgspec.json.encode(canonical, order="sorted")
    return f"{scope_prefix(scope, agent, request.model)}:{hashlib.sha256(payload).hexdigest()}"


def scope_prefix(scope: str, agent: str, model: str) -> str:
    """Whose answers a cache key shares: the agent's own, the route's, or everyone's."""
    return {"agent": f"agent:{agent}", "route": f"route:{model}", "global": "global"}[scope]


class NoCache:
    """`cache: {backend: none}`: every lookup misses and nothing is kept."""

    async def get(self, key: str) -> CachedAnswer | None:
        return None

    async def set(self, key: str, value: CachedAnswer, ttl_s: float) -> None:
        return None

    async def lock(self, key: str, ttl_s: float) -> bool:
        return True

    async def unlock(self, key: str) -> None:
        return None

    async def close(self) -> None:
        return None


def _expires(_key: str, entry: tuple[float, CachedAnswer], now: float) -> float:
    return now + entry[0]


class MemoryCache:
    """One process's cache: bounded by entries (least recently used go first), each entry living
    its own time to live."""

    def __init__(self, max_entries: int, timer: Callable[[], float] = time.monotonic) -> None:
        self._entries: TLRUCache[str, tuple[float, CachedAnswer]] = TLRUCache(
            maxsize=max_entries, ttu=_expires, timer=timer
        )

    async def get(self, key: str) -> CachedAnswer | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    async def set(self, key: str, value: CachedAnswer, ttl_s: float) -> None:
        self._entries[key] = (ttl_s, value)

    async def lock(self, key: str, ttl_s: float) -> bool:
        return True  # one process: the in-process single flight is enough

    async def unlock(self, key: str) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisCache:
    """Shared by every gateway process. A cache that cannot be reached is a miss, never an error:
    the answer is computed and served as if the cache were cold (logged once per outage)."""

    def __init__(self, client: StateClient, owns_client: bool, prefix: str = "tg:cache:") -> None:
        self._client = client
        self._owns = owns_client
        self._prefix = prefix
        self._decoder = msgspec.msgpack.Decoder(CachedAnswer)
        self._encoder = msgspec.msgpack.Encoder()
        self._failing = False

    def _trouble(self, exc: BaseException) -> None:
        if not self._failing:
            logging.getLogger("tiergate").warning("cache unavailable, serving uncached: %s", exc)
        self._failing = True

    async def get(self, key: str) -> CachedAnswer | None:
        try:
            raw = await self._client.get(self._prefix + key)
        except (RedisError, TimeoutError, OSError) as exc:
            self._trouble(exc)
            return None
        self._failing = False
        if raw is None:
            return None
        try:
            return self._decoder.decode(raw)  # type: ignore[arg-type]
        except msgspec.DecodeError:
            return None

    async def set(self, key: str, value: CachedAnswer, ttl_s: float) -> None:
        try:
            await self._client.set(
                self._prefix + key, self._encoder.encode(value), px=max(1, int(ttl_s * 1000))
            )
        except (RedisError, TimeoutError, OSError) as exc:
            self._trouble(exc)

    async def lock(self, key: str, ttl_s: float) -> bool:
        try:
            return bool(
                await self._client.set(f"{self._prefix}lock:{key}", b"1", nx=True, px=int(ttl_s * 1000))
            )
        except (RedisError, TimeoutError, OSError) as exc:
            self._trouble(exc)
            return True

    async def unlock(self, key: str) -> None:
        try:
            await self._client.delete(f"{self._prefix}lock:{key}")
        except (RedisError, TimeoutError, OSError) as exc:
            self._trouble(exc)

    async def close(self) -> None:
        if self._owns:
            await self._client.aclose()
