"""The cache stage of the request path: the request's cache key, if it may be cached, and a stored
(or concurrently computed) answer; a miss joins the key's single flight."""

from __future__ import annotations

from gateway.cache.backends import Cache, CachedAnswer, cache_key
from gateway.cache.flight import CacheControl, ResponseCache
from gateway.config.models import CacheConfig
from gateway.pipeline.settlement import Settlement


class CacheLookup:
    def __init__(self, cache: Cache, config: CacheConfig) -> None:
        self._responses = ResponseCache(cache, config.ttl_s)
        self._config = config

    async def lookup(self, settlement: Settlement, key: str, control: CacheControl) -> CachedAnswer | None:
        """A stored (or concurrently computed) answer; a miss joins the key's single flight."""
        cached, flight = await self._responses.lookup(key, control, self._config.wait_s)
        settlement.joined(flight, "miss" if cached is None else "hit")
        return cached

    def key(self, settlement: Settlement, control: CacheControl) -> str | None:
        """The request's cache key, or None when its answer may not be cached or reused."""
        route, request = settlement.plan.route, settlement.draft.request
        if not route.cache.enabled or not (control.read or control.write):
            return None
        if route.cache.only_deterministic and request.temperature != 0:
            return None
        return cache_key(request, self._config.scope, settlement.draft.agent.id)
