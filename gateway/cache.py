"""The response cache: an exact key over everything that can change an answer, behind one interface."""

from __future__ import annotations

import hashlib
from typing import Protocol

import msgspec
from cachetools import TTLCache

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
