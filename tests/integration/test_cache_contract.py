"""One contract for every Cache backend (memory and a real Redis), and the cache key's promises."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from budgets.redis_client import connect
from gateway.cache.backends import Cache, CachedAnswer, MemoryCache, RedisCache, cache_key
from gateway.cache.flight import CacheControl, ResponseCache
from gateway.errors import BadRequest
from tiers.types import ChatRequest, Usage

ANSWER = CachedAnswer(tier="llm:small", content="hello", body=b"{}", usage=Usage.of(3, 4))


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield MemoryCache(100)
        return
    proc = request.getfixturevalue("redis_proc")
    client = connect(f"redis://{proc.host}:{proc.port}/1", timeout_s=1)
    await client.flushdb()
    yield RedisCache(client, owns_client=True)
    await client.aclose()


async def test_what_is_set_is_got_back_until_its_ttl_passes(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.set("k", ANSWER, 0.3)
    assert await cache.get("k") == ANSWER
    await asyncio.sleep(0.4)
    assert await cache.get("k") is None


async def test_a_lock_is_held_until_released(cache: Cache) -> None:
    assert await cache.lock("k", 5)
    second = await cache.lock("k", 5)
    assert second is (not isinstance(cache, RedisCache))  # memory leaves it to the in-process flight
    await cache.unlock("k")
    assert await cache.lock("k", 5)


async def test_concurrent_identical_misses_share_one_computation(cache: Cache) -> None:
    responses = ResponseCache(cache, ttl_s=60)
    computed = 0

    async def one() -> CachedAnswer:
        nonlocal computed
        found, flight = await responses.lookup("same", CacheControl(), wait_s=5)
        if found is not None:
            return found
        computed += 1
        await asyncio.sleep(0.05)
        await flight.land(ANSWER, None, write=True)
        return ANSWER

    results = await asyncio.gather(*(one() for _ in range(10)))
    assert computed == 1 and all(r == ANSWER for r in results)


async def test_a_failed_leader_lets_the_waiters_compute(cache: Cache) -> None:
    responses = ResponseCache(cache, ttl_s=60)
    _, leader = await responses.lookup("k2", CacheControl(), wait_s=5)
    waiter = asyncio.ensure_future(responses.lookup("k2", CacheControl(), wait_s=5))
    await asyncio.sleep(0.05)
    await leader.land(None, None, write=True)
    found, flight = await waiter
    assert found is None and flight.leader


def request(**fields: Any) -> ChatRequest:
    base = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    return msgspec.convert({**base, **fields}, ChatRequest)


def test_the_key_ignores_json_key_order_and_fields_that_cannot_change_the_answer() -> None:
    tools_a = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": ["a"]}}}
    ]
    tools_b = [
        {"function": {"parameters": {"required": ["a"], "type": "object"}, "name": "f"}, "type": "function"}
    ]
    assert cache_key(request(tools=tools_a), "agent", "x") == cache_key(request(tools=tools_b), "agent", "x")
    assert cache_key(request(stream=True), "agent", "x") == cache_key(request(), "agent", "x")
    assert cache_key(request(user="u1"), "agent", "x") == cache_key(request(user="u2"), "agent", "x")
    assert cache_key(request(temperature=0.5), "agent", "x") != cache_key(request(), "agent", "x")
    assert cache_key(request(max_tokens=5), "agent", "x") != cache_key(request(), "agent", "x")


def test_the_key_is_scoped_per_agent_unless_configured_otherwise() -> None:
    assert cache_key(request(), "agent", "a") != cache_key(request(), "agent", "b")
    assert cache_key(request(), "route", "a") == cache_key(request(), "route", "b")
    assert cache_key(request(), "global", "a") == cache_key(request(), "global", "b")
    assert cache_key(request(), "global", "a") != cache_key(request(model="other"), "global", "a")


def test_cache_controls_are_parsed_from_headers() -> None:
    assert CacheControl.from_headers("no-cache", None) == CacheControl(read=False, write=True)
    assert CacheControl.from_headers("no-store", None) == CacheControl(read=False, write=False)
    assert CacheControl.from_headers(None, "30").ttl_s == 30
    with pytest.raises(BadRequest):
        CacheControl.from_headers(None, "soon")
