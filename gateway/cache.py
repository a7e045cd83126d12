"""The response cache: an exact key over everything that can change an answer, behind one interface."""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

import msgspec
import redis.asyncio as aioredis
from cachetools import TTLCache
from redis.exceptions import RedisError

from tiers.types import ChatRequest

# Fields that cannot change the answer, left out of the key.
_NOT_IN_KEY = {"stream": False, "stream_options": None, "user": None, "metadata": None, "store": None}


class CachedAnswer(msgspec.Struct):
    tier: str
    content: str | None
    body: bytes
    confidence: float = 1.0


class Cache(Protocol):
    async def get(self, key: str) -> CachedAnswer | None: ...

    async def set(self, key: str, value: CachedAnswer, ttl_s: float) -> None: ...

    async def close(self) -> None: ...


def cache_key(request: ChatRequest, scope: str, agent: str) -> str:
    """sha256 of a canonical encoding: msgspec encodes struct fields in declaration order and
    `order="sorted"` sorts every free-form mapping, so the key is independent of the client's
    JSON key order."""
    canonical = msgspec.structs.replace(request, **_NOT_IN_KEY)  # type: ignore[arg-type]
    payload = msgspec.json.encode(canonical, order="sorted")
    prefix = {"agent": f"agent:{agent}", "route": f"route:{request.model}", "global": "global"}[scope]
    return f"{prefix}:{hashlib.sha256(payload).hexdigest()}"


class NoCache:
    """`cache: {backend: none}`: every lookup misses and nothing is kept."""

    async def get(self, key: str) -> CachedAnswer | None:
        return None

    async def set(self, key: str, value: CachedAnswer, ttl_s: float) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryCache:
    """One process's cache: bounded by entries, each entry living `ttl_s` (one TTL for all)."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._entries: TTLCache[str, CachedAnswer] = TTLCache(maxsize=max_entries, ttl=ttl_s)

    async def get(self, key: str) -> CachedAnswer | None:
        return self._entries.get(key)

    async def set(self, key: str, value: CachedAnswer, ttl_s: float) -> None:
        self._entries[key] = value

    async def close(self) -> None:
        return None


class RedisCache:
    """Shared by every gateway process. A cache that cannot be reached is a miss, never an error:
    the answer is computed and served as if the cache were cold (logged once per outage)."""

    def __init__(self, client: aioredis.Redis, owns_client: bool, prefix: str = "tg:cache:") -> None:
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

    async def close(self) -> None:
        if self._owns:
            await self._client.aclose()
