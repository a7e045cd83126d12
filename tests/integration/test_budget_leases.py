"""Budget leases on a real Redis (pytest-redis): a busy agent's requests are granted in process,
and what every process grants from its leases never adds up to more than the limits."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from budgets.leases import LeaseSettings, LeasingLedger
from budgets.policy import BudgetPolicy, Denied, Estimate, Reservation
from budgets.redis_client import StateClient, connect
from budgets.redis_ledger import RedisLedger
from tests.cluster import flush

pytestmark = pytest.mark.redis

SUBJECTS = {"b": ("agent:b",), "r": ("agent:r",)}


def policies(tokens: int = 10_000, requests: int = 40) -> dict[str, BudgetPolicy]:
    # tokens a day, so no test meets a new period half way (only midnight, UTC, could cut one)
    return {
        "agent:b": BudgetPolicy.build("agent:b", tokens={"day": tokens}),
        "agent:r": BudgetPolicy.build("agent:r", requests_per_minute=requests),
    }


@pytest.fixture
async def url(redis_proc: Any) -> AsyncIterator[str]:
    address = f"redis://{redis_proc.host}:{redis_proc.port}/3"
    client = connect(address, timeout_s=2)
    await client.flushdb()
    await client.aclose()
    yield address


class Process:
    """One gateway process's ledgers: its own Redis client, a Redis ledger and leases over it."""

    def __init__(self, url: str, settings: LeaseSettings, timeout_s: float = 2, **limits: int) -> None:
        self.client: StateClient = connect(url, timeout_s=timeout_s)
        self.redis = RedisLedger(self.client, policies(**limits), SUBJECTS, {})
        self.leased = LeasingLedger(self.redis, SUBJECTS, settings)

    async def close(self) -> None:
        await self.leased.close()
        await self.client.aclose()


async def used(url: str, agent: str = "b", **limits: int) -> int:
    """What Redis counts as used (holds included), read by a ledger without leases."""
    client = connect(url, timeout_s=2)
    usage = await RedisLedger(client, policies(**limits), SUBJECTS, {}).usage(agent)
    await client.aclose()
    return usage[0].used


async def evalsha_calls(client: StateClient) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_busy_agent_is_granted_from_a_lease_without_a_round_trip(url: str) -> None:
    process = Process(url, LeaseSettings(ttl_s=5.0), tokens=1_000_000)
    ledger = process.leased
    for _ in range(6):  # busy enough to lease for
        reservation = await ledger.reserve("b", Estimate(10, 20))
        assert isinstance(reservation, Reservation)
        await ledger.settle(reservation, 25, 0)
    await asyncio.sleep(0.05)  # the lease, taken in the background, arrives
    await process.client.config_resetstat()
    leased = 0
    for _ in range(100):
        reservation = await ledger.reserve("b", Estimate(10, 20))
        assert isinstance(reservation, Reservation) and reservation.completion_tokens == 20
        leased += reservation.lease is not None
        await ledger.settle(reservation, 25, 0)
    calls = await evalsha_calls(process.client)
    # without leases: 100 reserves and 100 settles; here a few leases, each taken and settled once
    assert leased >= 90 and calls <= 20, (leased, calls)
    assert (await ledger.usage("b"))[0].used == 106 * 25  # its room given back, its use charged exactly
    await process.close()


async def test_a_lease_gives_back_its_unused_room_when_it_ends(url: str) -> None:
    process = Process(url, LeaseSettings(ttl_s=0.3, min_requests=2))
    for _ in range(3):
        reservation = await process.leased.reserve("b", Estimate(10, 20))
        assert isinstance(reservation, Reservation)
        await process.leased.settle(reservation, 12, 0)
    await asyncio.sleep(0.05)
    assert await used(url) > 3 * 12  # the lease holds room beyond what was spent
    in_flight = await process.leased.reserve("b", Estimate(10, 20))
    assert isinstance(in_flight, Reservation) and in_flight.lease is not None
    await asyncio.sleep(0.4)  # the lease ended: its unused room is free, its request in flight held
    assert await used(url) == 3 * 12 + 30
    await process.leased.settle(in_flight, 7, 0)
    await asyncio.sleep(0.1)
    assert await used(url) == 3 * 12 + 7
    hash_ = await process.client.hgetall("tg:{agent:b}:agent:b:tokens:day")
    assert hash_[b"h"] == b"0" and hash_[b"f"] == b"0"  # nothing held, nobody in flight
    await process.close()


async def test_a_lease_grants_through_a_redis_pause_and_settles_once_redis_answers(
    url: str, redis_proc: Any
) -> None:
    process = Process(url, LeaseSettings(ttl_s=0.3, min_requests=2), timeout_s=0.1)
    for _ in range(3):
        reservation = await process.leased.reserve("b", Estimate(10, 20))
        assert isinstance(reservation, Reservation)
        await process.leased.settle(reservation, 12, 0)
    await asyncio.sleep(0.05)
    admin = aioredis.Redis(host=redis_proc.host, port=redis_proc.port)
    await admin.execute_command("CLIENT", "PAUSE", 800, "ALL")  # Redis stops answering for 0.8 s
    during = await process.leased.reserve("b", Estimate(10, 20))
    assert isinstance(during, Reservation) and during.lease is not None  # its room is held already
    await process.leased.settle(during, 9, 0)
    await asyncio.sleep(0.4)  # the lease ends while Redis is paused: its settlement waits
    readings = []
    for _ in range(100):
        readings.append(await used(url))
        if readings[-1] == 3 * 12 + 9:
            break
        await asyncio.sleep(0.1)
    assert readings[-1] == 3 * 12 + 9, readings  # settled once Redis answered, exactly once
    await admin.aclose()
    await process.close()


async def test_room_another_process_leases_is_contended_and_comes_back(url: str) -> None:
    settings = LeaseSettings(ttl_s=0.5, share=0.5, min_requests=1)
    holder = Process(url, settings, tokens=1000)
    other = Process(url, settings, tokens=1000)
    first = await holder.leased.reserve("b", Estimate(10, 40))  # direct; then a lease of 400
    assert isinstance(first, Reservation)
    await holder.leased.settle(first, 50, 0)
    await asyncio.sleep(0.05)
    assert await used(url, tokens=1000) == 450
    big = await other.redis.reserve("b", Estimate(100, 500))  # 600 do not fit beside the lease
    assert isinstance(big, Reservation) and big.completion_tokens == 450
    await other.redis.cancel(big)
    refused = await other.redis.reserve("b", Estimate(600, 10))
    assert isinstance(refused, Denied) and refused.contended and refused.held == 400
    await asyncio.sleep(0.6)  # the lease ends unused
    granted = await other.redis.reserve("b", Estimate(600, 10))
    assert isinstance(granted, Reservation)
    assert await used(url, tokens=1000) == 50 + 610
    await holder.close()
    await other.close()


async def test_request_slots_a_lease_holds_are_contended_and_come_back(url: str) -> None:
    if time.time() % 60 > 55:  # requests are limited a minute: start in a minute that lasts the test
        await asyncio.sleep(61 - time.time() % 60)
    settings = LeaseSettings(ttl_s=0.5, share=0.5, min_requests=1)
    holder = Process(url, settings, requests=40)
    other = Process(url, settings, requests=40)
    first = await holder.leased.reserve("r", Estimate(0, 0))
    assert isinstance(first, Reservation)
    await asyncio.sleep(0.05)  # a lease of 8 request slots
    leased = await holder.leased.reserve("r", Estimate(0, 0))
    assert isinstance(leased, Reservation) and leased.lease is not None
    outcomes = [await other.redis.reserve("r", Estimate(0, 0)) for _ in range(32)]
    granted = sum(isinstance(o, Reservation) for o in outcomes)
    assert granted == 40 - 1 - 8  # one made directly, eight held by the lease
    refused = outcomes[-1]
    assert isinstance(refused, Denied) and refused.contended and refused.held == 8
    assert "lease(s) of other gateway processes hold 8 more" in refused.message
    await asyncio.sleep(0.6)  # the lease ends having made one request: seven slots come back
    more = [await other.redis.reserve("r", Estimate(0, 0)) for _ in range(8)]
    assert sum(isinstance(o, Reservation) for o in more) == 7
    last = more[-1]
    assert isinstance(last, Denied) and not last.contended
    await holder.close()
    await other.close()


@pytest.fixture(params=["redis", "cluster"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """One Redis, or a three-master Redis Cluster (every script's keys in one slot); emptied."""
    if request.param == "cluster":
        address: str = request.getfixturevalue("cluster_url")
        flush(address)
        return address
    return str(request.getfixturevalue("url"))


async def test_processes_leasing_one_budget_spend_all_of_it_and_never_more(shared_url: str) -> None:
    """Two processes, 40 busy requesters each, every request settling a random amount up to what
    it reserved: together they never pass the limit, and stop only when what is left would not
    fit a request (the last room leases held comes back to whoever needs it)."""
    url = shared_url
    limit = 100_000
    processes = [Process(url, LeaseSettings(ttl_s=0.2), tokens=limit) for _ in range(2)]
    for process in processes:  # as a gateway does at start (a cold cluster meeting a burst of
        await process.leased.load_scripts()  # NOSCRIPT from two clients closes connections)
    rng = random.Random(7)
    spent: list[int] = []
    leased = direct = 0

    async def requester(ledger: LeasingLedger) -> None:
        nonlocal leased, direct
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            outcome = await ledger.reserve("b", Estimate(10, 40))
            if isinstance(outcome, Denied):
                if not outcome.contended:
                    return
                await asyncio.sleep(0.02)
                continue
            leased += outcome.lease is not None
            direct += outcome.lease is None
            await asyncio.sleep(rng.random() * 0.005)
            tokens = rng.randint(10, outcome.tokens)
            spent.append(tokens)
            await ledger.settle(outcome, tokens, 0)

    await asyncio.gather(*(requester(p.leased) for p in processes for _ in range(40)))
    for process in processes:
        await process.close()
    total = sum(spent)
    assert limit - 50 < total <= limit  # all of it, short of less than one request, and never more
    assert await used(url, tokens=limit) == total  # Redis counts exactly what was spent
    assert leased > 3 * direct, (leased, direct)
