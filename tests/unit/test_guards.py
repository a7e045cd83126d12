"""Retry budgets, bulkheads and loop detection."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import RateLimited
from gateway.pipeline.loops import LoopGuard, LoopLimits
from tiers.lanes import Lane
from tiers.llm.guards import Bulkhead, RetryBudget
from tiers.types import ChatRequest, Message


def test_retries_are_capped_at_a_share_of_recent_requests() -> None:
    now = [0.0]
    budget = RetryBudget(ratio=0.2, min_per_s=0.0, window_s=10, clock=lambda: now[0])
    for _ in range(100):
        budget.record_request()
    granted = sum(budget.try_retry() for _ in range(100))
    assert granted == 20
    now[0] += 11  # the window has passed: nothing recent to retry against
    assert not budget.try_retry()


def test_a_quiet_upstream_can_still_be_retried() -> None:
    budget = RetryBudget(ratio=0.0, min_per_s=1.0, window_s=10)
    budget.record_request()
    assert sum(budget.try_retry() for _ in range(20)) == 10


async def test_a_bulkhead_admits_its_limit_and_times_out_the_rest() -> None:
    bulkhead = Bulkhead(2, queue_timeout_s=0.05)
    assert await bulkhead.enter() and await bulkhead.enter()
    assert not await bulkhead.enter()
    waiter = asyncio.ensure_future(bulkhead.enter())
    await asyncio.sleep(0.01)
    bulkhead.leave()
    assert await waiter
    unlimited = Bulkhead(None, 0)
    assert all([await unlimited.enter() for _ in range(100)])


def test_loop_detection_sees_through_whitespace_and_invisible_characters() -> None:
    stopped: list[tuple[str, str]] = []
    guard = LoopGuard(lambda agent, kind: stopped.append((agent, kind)), clock=lambda: 100.0)
    limits = LoopLimits(max_repeats=2, window_s=60, max_steps=None)
    spellings = ["try again", "try again ", " try\u200b  again\n"]
    for text in spellings[:2]:
        guard.check("a", limits, ChatRequest(model="m", messages=[Message(role="user", content=text)]), None)
    with pytest.raises(RateLimited):
        request = ChatRequest(model="m", messages=[Message(role="user", content=spellings[2])])
        guard.check("a", limits, request, None)
    assert stopped == [("a", "repeat")]
    other = ChatRequest(model="m", messages=[Message(role="user", content="try again later")])
    guard.check("a", limits, other, None)  # a different text is not a repeat


async def test_a_bulkhead_serves_waiting_calls_in_lane_order() -> None:
    bulkhead = Bulkhead(1, queue_timeout_s=5)
    assert await bulkhead.enter("normal")
    order: list[str] = []

    async def call(lane: Lane) -> None:
        assert await bulkhead.enter(lane)
        order.append(lane)
        bulkhead.leave()

    waiting = [asyncio.ensure_future(call(lane)) for lane in ("background", "normal", "critical", "normal")]
    await asyncio.sleep(0)
    bulkhead.leave()
    await asyncio.gather(*waiting)
    assert order == ["critical", "normal", "normal", "background"]


async def test_background_never_takes_the_places_kept_for_critical_work() -> None:
    bulkhead = Bulkhead(4, queue_timeout_s=0.05, reserve_for_critical=0.5)  # 2 of 4 kept
    assert await bulkhead.enter("background")
    assert await bulkhead.enter("background")
    assert not await bulkhead.enter("background")  # only kept places are free: it times out
    assert await bulkhead.enter("critical")
    assert await bulkhead.enter("normal")
    assert not await bulkhead.enter("critical")  # all four taken
    bulkhead.leave()
    assert await bulkhead.enter("critical")


async def test_a_call_that_gives_up_waiting_leaves_its_place_to_the_next() -> None:
    bulkhead = Bulkhead(1, queue_timeout_s=5)
    assert await bulkhead.enter()
    gone = asyncio.ensure_future(bulkhead.enter("critical"))
    later = asyncio.ensure_future(bulkhead.enter("normal"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    bulkhead.leave()
    assert await later
