"""Retry budgets and bulkheads."""

from __future__ import annotations

import asyncio

from tiers.llm.guards import Bulkhead, RetryBudget


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
