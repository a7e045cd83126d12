"""One contract for every Ledger backend: memory and a real Redis (started by pytest-redis)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from budgets.leases import LeaseSettings, LeasingLedger
from budgets.ledger import Ledger, StateError
from budgets.memory import MemoryLedger
from budgets.policy import MICRO_USD, BudgetPolicy, Denied, Estimate, Reservation
from budgets.redis_client import StateClient, connect
from budgets.redis_ledger import RedisLedger


def policies(**budgets: dict[str, Any]) -> dict[str, BudgetPolicy]:
    return {subject: BudgetPolicy.build(subject, **spec) for subject, spec in budgets.items()}


SUBJECTS = {"a": ("agent:a", "team:t"), "b": ("agent:b", "team:t"), "solo": ("agent:solo",)}
POLICIES = policies(
    **{
        "agent:a": {"tokens": {"minute": 1000, "day": 5000}, "requests_per_minute": 500},
        "agent:b": {"tokens": {"minute": 1000}},
        "team:t": {"tokens": {"minute": 1500}},
        "agent:solo": {"usd": {"day": 0.001}, "requests_per_minute": 3},
    }
)
TAGS = {"a": "team:t", "b": "team:t"}


async def shared_client(request: pytest.FixtureRequest, kind: str) -> StateClient:
    """An emptied client of a real Redis (pytest-redis) or, for "cluster", of the tests' cluster
    (every script's keys in one slot, on a real three-master cluster)."""
    if kind == "cluster":
        client = connect(request.getfixturevalue("cluster_url"), timeout_s=2)
    else:
        proc = request.getfixturevalue("redis_proc")
        client = connect(f"redis://{proc.host}:{proc.port}/0", timeout_s=2)
    await client.flushdb()
    return client


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-leases", marks=pytest.mark.redis),
        "cluster",
        "cluster-leases",
    ]
)
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger(POLICIES, SUBJECTS)
        return
    client = await shared_client(request, request.param.removesuffix("-leases"))
    ledger: Ledger = RedisLedger(client, POLICIES, SUBJECTS, TAGS)
    if request.param.endswith("-leases"):  # a worker's busy agents granted from leases
        ledger = LeasingLedger(ledger, SUBJECTS, LeaseSettings(ttl_s=0.5, min_requests=4))
    yield ledger
    if isinstance(ledger, LeasingLedger):
        await ledger.close()
    await client.aclose()


async def test_a_hundred_concurrent_reservations_never_grant_more_than_the_limit(ledger: Ledger) -> None:
    outcomes = await asyncio.gather(*(ledger.reserve("b", Estimate(7, 3)) for _ in range(100)))
    granted = [o for o in outcomes if isinstance(o, Reservation)]
    assert len(granted) == 100  # 100 x 10 tokens is exactly agent b's minute
    assert all(o.completion_tokens == 3 for o in granted)
    more = await ledger.reserve("b", Estimate(7, 3))
    assert isinstance(more, Denied)
    usage = {(u.subject, u.window): u.used for u in await ledger.usage("b")}
    assert usage[("agent:b", "minute")] == 1000


async def test_concurrent_agents_of_one_team_share_its_budget_exactly(ledger: Ledger) -> None:
    outcomes = await asyncio.gather(*(ledger.reserve(agent, Estimate(5, 5)) for agent in ["a", "b"] * 100))
    granted = [o for o in outcomes if isinstance(o, Reservation)]
    assert len(granted) == 150  # the team's 1500 tokens, not the agents' 2000
    usage = {(u.subject, u.window): u.used for u in await ledger.usage("a")}
    assert usage[("team:t", "minute")] == 1500


async def test_the_completion_cap_is_lowered_to_what_the_budget_still_allows(ledger: Ledger) -> None:
    first = await ledger.reserve("b", Estimate(900, 50))
    assert isinstance(first, Reservation) and first.completion_tokens == 50
    second = await ledger.reserve("b", Estimate(20, 500))
    assert isinstance(second, Reservation)
    assert second.completion_tokens == 30  # 1000 - 950 - 20 prompt
    assert second.remaining_tokens == 0


async def test_settling_refunds_what_was_not_used(ledger: Ledger) -> None:
    reservation = await ledger.reserve("b", Estimate(100, 400))
    assert isinstance(reservation, Reservation)
    await ledger.settle(reservation, tokens=150, micro_usd=0)
    usage = {(u.subject, u.window): u for u in await ledger.usage("b")}
    assert usage[("agent:b", "minute")].used == 150
    assert usage[("agent:b", "minute")].remaining == 850
    assert usage[("team:t", "minute")].used == 150


async def test_a_denial_says_which_limit_and_when_it_frees(ledger: Ledger) -> None:
    await ledger.reserve("b", Estimate(990, 10))
    denied = await ledger.reserve("b", Estimate(5, 10))
    assert isinstance(denied, Denied)
    assert denied.subject == "agent:b" and denied.limit.window == "minute"
    assert 0 < denied.retry_after_s <= 60


async def test_money_and_request_limits_hold(ledger: Ledger) -> None:
    # 0.001 USD = 1000 micro-dollars; 1 micro-dollar per prompt token, 2 per completion token
    estimate = Estimate(100, 1000, input_micro_usd_per_token=1.0, output_micro_usd_per_token=2.0)
    first = await ledger.reserve("solo", estimate)
    assert isinstance(first, Reservation)
    assert first.completion_tokens == 450 and first.micro_usd == 1000
    await ledger.settle(first, tokens=300, micro_usd=500)
    second = await ledger.reserve("solo", estimate)
    assert isinstance(second, Reservation) and second.completion_tokens == 200
    await ledger.settle(second, tokens=0, micro_usd=0)
    third = await ledger.reserve("solo", Estimate(1, 1))
    assert isinstance(third, Reservation)
    fourth = await ledger.reserve("solo", Estimate(1, 1))
    assert isinstance(fourth, Denied) and fourth.limit.metric == "requests"
    usage = {(u.metric, u.window): u.used for u in await ledger.usage("solo")}
    assert usage[("usd", "day")] == 500 + 1 * 0 + third.micro_usd
    assert usage[("requests", "minute")] == 3
    assert MICRO_USD == 1_000_000


async def test_an_agent_without_limits_is_always_granted(ledger: Ledger) -> None:
    outcome = await ledger.reserve("nobody", Estimate(10, 10))
    assert isinstance(outcome, Reservation) and outcome.completion_tokens == 10


def test_the_memory_ledger_forgets_a_window_once_it_has_passed() -> None:
    now = [1_000_020.0]
    ledger = MemoryLedger(POLICIES, SUBJECTS, clock=lambda: now[0])

    async def run() -> None:
        assert isinstance(await ledger.reserve("b", Estimate(990, 10)), Reservation)
        assert isinstance(await ledger.reserve("b", Estimate(5, 5)), Denied)
        now[0] += 60
        assert isinstance(await ledger.reserve("b", Estimate(5, 5)), Reservation)

    asyncio.run(run())


@pytest.mark.redis
async def test_the_redis_ledger_forgets_a_window_once_it_has_passed(redis_proc: Any) -> None:
    client = aioredis.Redis(host=redis_proc.host, port=redis_proc.port)
    await client.flushdb()
    ledger = RedisLedger(client, POLICIES, SUBJECTS, TAGS)
    assert isinstance(await ledger.reserve("b", Estimate(990, 10)), Reservation)
    assert isinstance(await ledger.reserve("b", Estimate(5, 5)), Denied)
    # move every counter back one period, as if the minute had passed
    async for key in client.scan_iter("tg:*"):
        if await client.type(key) != b"hash":
            continue  # reservation markers
        period = int(await client.hget(key, "p"))  # type: ignore[arg-type]
        await client.hset(key, "p", period - 1)
    assert isinstance(await ledger.reserve("b", Estimate(5, 5)), Reservation)
    await client.aclose()


@pytest.mark.redis
async def test_the_redis_ledger_keeps_each_agents_keys_in_one_cluster_slot(redis_proc: Any) -> None:
    client = aioredis.Redis(host=redis_proc.host, port=redis_proc.port)
    await client.flushdb()
    ledger = RedisLedger(client, POLICIES, SUBJECTS, TAGS)
    await ledger.reserve("a", Estimate(1, 1))
    keys = [k.decode() async for k in client.scan_iter("tg:*")]
    assert keys and all("{team:t}" in k for k in keys)
    await client.aclose()


@pytest.mark.redis
async def test_an_unreachable_redis_is_a_state_error_not_a_crash() -> None:
    client = connect("redis://127.0.0.1:1/0", timeout_s=0.2)
    ledger = RedisLedger(client, POLICIES, SUBJECTS, TAGS)
    with pytest.raises(StateError):
        await ledger.reserve("a", Estimate(1, 1))
    assert await ledger.ping() is False
    await client.aclose()


async def test_crossing_a_soft_limit_is_reported_once_per_window(ledger: Ledger) -> None:
    # rebuild the same backend with a warn_at policy
    warned = {"agent:w": BudgetPolicy.build("agent:w", tokens={"minute": 100}, warn_at=0.5)}
    subjects = {"w": ("agent:w",)}
    if isinstance(ledger, RedisLedger):
        ledger = RedisLedger(ledger._client, warned, subjects, {})
    else:
        ledger = MemoryLedger(warned, subjects)
    first = await ledger.reserve("w", Estimate(20, 10))
    second = await ledger.reserve("w", Estimate(20, 10))
    third = await ledger.reserve("w", Estimate(10, 5))
    assert isinstance(first, Reservation) and first.crossed == ()
    assert isinstance(second, Reservation) and len(second.crossed) == 1
    assert second.crossed[0].subject == "agent:w" and second.crossed[0].window == "minute"
    assert isinstance(third, Reservation) and third.crossed == ()


async def test_a_free_answer_needs_no_token_room_but_counts_as_a_request(ledger: Ledger) -> None:
    for _ in range(3):
        spent = await ledger.reserve("solo", Estimate(1, 1, 1.0, 1.0))
        assert isinstance(spent, Reservation)
    assert isinstance(await ledger.reserve("solo", Estimate(0, 0)), Denied)  # requests_per_minute: 3
    assert isinstance(await ledger.reserve("b", Estimate(995, 5)), Reservation)
    free = await ledger.reserve("b", Estimate(0, 0))
    assert isinstance(free, Reservation) and free.tokens == 0


async def test_a_budget_held_by_requests_in_flight_is_contended_not_spent(ledger: Ledger) -> None:
    first = await ledger.reserve("b", Estimate(20, 600))  # holds 620 of agent b's 1000 a minute
    second = await ledger.reserve("b", Estimate(20, 600))  # the 380 left: 20 + 360
    assert isinstance(first, Reservation) and isinstance(second, Reservation)
    assert second.completion_tokens == 360
    busy = await ledger.reserve("b", Estimate(20, 600))
    assert isinstance(busy, Denied)
    assert busy.contended and busy.held == 1000 and busy.in_flight == 2
    assert "has spent 0 of 1000 tokens" in busy.message and "2 request(s) in flight hold 1000" in busy.message
    await ledger.settle(first, 50, 0)  # what it used: the rest of its hold is free again
    after = await ledger.reserve("b", Estimate(20, 600))
    assert isinstance(after, Reservation) and after.completion_tokens == 1000 - 50 - 380 - 20
    await ledger.settle(second, 380, 0)
    await ledger.settle(after, 570, 0)  # 50 + 380 + 570: all of it spent
    spent = await ledger.reserve("b", Estimate(20, 600))
    assert isinstance(spent, Denied) and not spent.contended and spent.held == 0
    assert spent.message == "agent:b has spent 1000 of 1000 tokens this minute"


async def test_background_work_never_takes_the_share_kept_for_critical_work(ledger: Ledger) -> None:
    routine = await ledger.reserve("b", Estimate(100, 800, keep_share=0.1))
    assert isinstance(routine, Reservation) and routine.completion_tokens == 800  # 900 of 1000, not more
    more = await ledger.reserve("b", Estimate(10, 10, keep_share=0.1))
    assert isinstance(more, Denied) and more.limit.metric == "tokens"
    critical = await ledger.reserve("b", Estimate(10, 10))
    assert isinstance(critical, Reservation) and critical.completion_tokens == 10


async def test_settlements_falling_due_together_are_each_applied_once(ledger: Ledger) -> None:
    held = await asyncio.gather(*(ledger.reserve(agent, Estimate(10, 10)) for agent in ["a", "b"] * 30))
    assert all(isinstance(r, Reservation) for r in held)
    settling = [ledger.settle(r, tokens=5, micro_usd=0) for r in held if isinstance(r, Reservation)]
    abandoned = asyncio.ensure_future(settling[0])  # a request whose client went away meanwhile
    abandoned.cancel()
    await asyncio.gather(*settling[1:])
    usage = {(u.subject, u.window, u.metric): u.used for u in await ledger.usage("a")}
    assert usage[("agent:a", "minute", "tokens")] == 30 * 5
    assert usage[("team:t", "minute", "tokens")] == 60 * 5  # the cancelled wait did not cancel its settlement
    again = await ledger.reserve("b", Estimate(10, 10))  # nothing is held any more
    assert (
        isinstance(again, Reservation) and again.remaining_tokens == 1000 - 150 - 20
    )  # agent b's own minute


@pytest.mark.parametrize("shared", [pytest.param("redis", marks=pytest.mark.redis), "cluster"])
async def test_the_redis_ledger_sends_settlements_due_together_in_one_round_trip(
    shared: str, request: pytest.FixtureRequest
) -> None:
    client = await shared_client(request, shared)
    ledger = RedisLedger(client, POLICIES, SUBJECTS, TAGS)
    outcomes = [await ledger.reserve(agent, Estimate(10, 10)) for agent in ["a", "b", "solo"] * 20]
    held = [r for r in outcomes if isinstance(r, Reservation)]
    assert len(held) == 43  # solo may make 3 requests a minute (and holds no money at a free price)
    pipelines: list[int] = []
    make_pipeline = client.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        async def execute_counted(*a: Any, **k: Any) -> Any:
            pipelines.append(len(pipe))
            return await execute(*a, **k)

        pipe.execute = execute_counted  # type: ignore[method-assign]
        return pipe

    client.pipeline = counted  # type: ignore[method-assign]
    await asyncio.gather(*(ledger.settle(r, 12, 0) for r in held))
    assert pipelines == [43]  # one round trip (one per node on a cluster) for all of them
    usage = {(u.subject, u.window, u.metric): u.used for u in await ledger.usage("a")}
    assert usage[("agent:a", "minute", "tokens")] == 20 * 12
    assert usage[("team:t", "minute", "tokens")] == 40 * 12
    await client.aclose()


@pytest.mark.redis
async def test_settlements_redis_could_not_take_are_applied_once_it_answers(redis_proc: Any) -> None:
    client = connect(f"redis://{redis_proc.host}:{redis_proc.port}/0", timeout_s=0.1)
    await client.flushdb()
    ledger = RedisLedger(client, POLICIES, SUBJECTS, TAGS)
    held = [await ledger.reserve("b", Estimate(10, 10)) for _ in range(3)]
    admin = aioredis.Redis(host=redis_proc.host, port=redis_proc.port)
    await admin.execute_command("CLIENT", "PAUSE", 600, "ALL")  # Redis stops answering for 0.6 s
    outcomes = await asyncio.gather(
        *(ledger.settle(r, 4, 0) for r in held if isinstance(r, Reservation)), return_exceptions=True
    )
    assert all(isinstance(o, StateError) for o in outcomes)
    deadline = asyncio.get_running_loop().time() + 10
    used = -1
    while used != 12 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        with contextlib.suppress(StateError):
            used = {(u.subject, u.window): u.used for u in await ledger.usage("b")}[("agent:b", "minute")]
    assert used == 12  # each settled once, by the retries in the background
    await ledger.close()
    await admin.aclose()
    await client.aclose()


async def test_a_money_limited_agent_settles_an_answer_at_a_free_price(ledger: Ledger) -> None:
    free = await ledger.reserve("solo", Estimate(10, 10))  # no price: it holds no money
    assert isinstance(free, Reservation) and free.micro_usd == 0
    await ledger.settle(free, 20, 0)  # a state error here once left the request counted in flight
    priced = await ledger.reserve("solo", Estimate(1, 1, 400.0, 400.0))
    assert isinstance(priced, Reservation) and priced.micro_usd == 800
    over = await ledger.reserve("solo", Estimate(1, 1, 400.0, 400.0))
    assert isinstance(over, Denied) and over.in_flight == 1  # only the priced request is in flight
