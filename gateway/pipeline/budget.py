"""The budget stage of the request path: reserve before the ladder (lowering the completion cap to
what is granted, or downgrading to a cheaper ladder), settle after it with what was actually spent."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from budgets.ledger import Ledger, StateError
from budgets.policy import Denied, Estimate, Reservation
from budgets.tokens import PromptTokens
from gateway.config.models import AgentConfig
from gateway.errors import BudgetExhausted, GatewayError, RateLimited, Unavailable
from gateway.observe.alerts import BudgetAlerts
from gateway.pipeline.routes import ResolvedRoute
from routing.ladder import Ladder
from tiers.lanes import LANES, RANK, Lane
from tiers.llm.circuit import CircuitBreaker, CircuitSettings
from tiers.types import Answer, ChatRequest, Usage

log = logging.getLogger("tiergate")


@dataclass(frozen=True, slots=True)
class AgentBudget:
    """What the request path needs to know of an agent's budget to lower `max_tokens` safely."""

    limited: bool  # a token or cost limit applies (to the agent or its team)
    default_completion_tokens: int
    fail_open: bool
    downgrade: bool = False
    has_limits: bool = True  # any limit at all; without one there is nothing to reserve or settle
    wait_s: float = 2.0  # how long a request held back only by reservations in flight waits
    keep_for_critical: float = 0.1  # share of each token and money limit background may not use
    max_waiting: int = 256  # of one agent's requests waiting so at once
    recent: tuple[float, float] | None = None  # reserve what recent answers used: (percentile, margin)


class RecentCompletions:
    """The completion sizes of a route's latest answers, for reserving what answers really use.
    An answer that reached its cap is counted at twice the cap, so the estimate can grow again."""

    KEEP = 1000
    MIN_SAMPLES = 50

    def __init__(self) -> None:
        self._sizes: collections.deque[int] = collections.deque(maxlen=self.KEEP)
        self._cached: dict[float, int] = {}
        self._added = 0

    def add(self, completion_tokens: int, cap: int) -> None:
        self._sizes.append(completion_tokens * 2 if completion_tokens >= cap > 0 else completion_tokens)
        self._added += 1
        if self._added % 50 == 0:
            self._cached = {}

    def percentile(self, p: float) -> int | None:
        if len(self._sizes) < self.MIN_SAMPLES:
            return None
        if p not in self._cached:
            ordered = sorted(self._sizes)
            self._cached[p] = ordered[min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1)]
        return self._cached[p]


POLL_S = 0.05  # how often a waiting request looks again (another gateway's settles make no sound here)


def budget_exhausted(denied: Denied) -> BudgetExhausted:
    return BudgetExhausted(
        f"budget exhausted: {denied.message}; resets in {denied.retry_after_s:.0f}s",
        retry_after_s=denied.retry_after_s,
    )


def budget_busy(denied: Denied, waited_s: float, retry_after_s: float) -> RateLimited:
    """A refusal for contention: the budget is not spent, requests in flight hold it."""
    return RateLimited(
        f"budget busy: {denied.message}; waited {waited_s:.1f}s for them to settle; retry shortly",
        code="budget_contended",
        retry_after_s=retry_after_s,
    )


class Grant(msgspec.Struct, frozen=True):
    """What the budget allows a request: the request as it may go upstream (its completion cap
    lowered to what was reserved), the ladder it may walk, and the reservation to settle."""

    request: ChatRequest
    ladder: Ladder
    reservation: Reservation | None = None
    downgraded: str | None = None  # why a shorter ladder than the route's is walked
    denial: GatewayError | None = None  # what stands if a downgrade to free tiers cannot answer
    ms: float = 0.0
    waited_ms: float = 0.0  # of `ms`, waiting for reservations in flight to settle


class BudgetStep:
    def __init__(
        self,
        ledger: Ledger,
        budgets: dict[str, AgentBudget],
        alerts: BudgetAlerts,
        prices: dict[str, tuple[float, float]],
        batch_prices: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self._ledger = ledger
        self._budgets = budgets
        self._alerts = alerts
        self._prices = prices  # upstream -> micro-dollars per (input, output) token
        self._batch_prices = batch_prices or {}  # the same, in the upstream's own provider batches
        self._state_ok = True
        self._settled = asyncio.Event()  # set (and replaced) whenever a reservation settles here
        # agent -> its requests waiting for reservations to settle, per lane
        self._waiting: dict[str, list[int]] = {}
        self._held_since: dict[int, float] = {}  # reservation -> when it was granted
        self._hold_s = 1.0  # how long a reservation is typically held (moving average)
        self._recent: dict[str, RecentCompletions] = {}  # route -> its answers' completion sizes
        # A breaker around a remote state backend: once it keeps failing, requests stop waiting out
        # its timeout one by one and get the configured behaviour at once, until a probe succeeds.
        self._state_breaker = (
            CircuitBreaker(CircuitSettings(failures=3, cooldown_s=2.0)) if ledger.remote else None
        )

    async def reserve(
        self,
        agent: AgentConfig,
        route: ResolvedRoute,
        request: ChatRequest,
        prompt: PromptTokens,
        lane: Lane = "normal",
    ) -> Grant:
        """Hold the most this request can cost, or raise `BudgetExhausted` (or `Unavailable` when
        the state backend is down and the gateway fails closed)."""
        budget = self._budgets[agent.id]
        if not budget.has_limits:  # no budget state is touched, so no state outage refuses it
            return Grant(request, route.ladder)
        cap = request.completion_cap()
        if route.max_output_tokens is not None:
            cap = min(cap or route.max_output_tokens, route.max_output_tokens)
        wanted = cap if cap is not None else self._default_completion(budget, route.name)
        prompt_tokens = prompt()  # counted only here, for an agent with limits
        began = time.perf_counter()
        try:
            keep = budget.keep_for_critical if lane == "background" else 0.0
            estimate = Estimate(prompt_tokens, wanted, route.input_micro_usd, route.output_micro_usd, keep)
            held = await self._hold(agent.id, estimate)
            waited = 0.0
            if isinstance(held, Denied) and held.contended:
                held = await self._wait_for_room(agent.id, budget, estimate, held, lane)
                waited = (time.perf_counter() - began) * 1000
            downgraded = None
            if isinstance(held, Denied) and held.contended and not budget.downgrade:
                waited = time.perf_counter() - began
                raise budget_busy(held, waited, max(1.0, math.ceil(self._hold_s)))
            if isinstance(held, Denied) and budget.downgrade and held.limit.metric != "requests":
                tokens = (prompt_tokens, wanted)
                downgraded = await self._downgrade(agent.id, route, request, tokens, held, began)
        except StateError as exc:
            self._state_changed(ok=False, detail=str(exc), fail_open=budget.fail_open)
            if not budget.fail_open:
                raise Unavailable(f"budget state is unavailable: {exc}", retry_after_s=1) from None
            return Grant(request, route.ladder, ms=(time.perf_counter() - began) * 1000)
        self._state_changed(ok=True)
        if downgraded is not None:
            return downgraded
        if isinstance(held, Denied):
            raise budget_exhausted(held)
        if budget.limited and held.completion_tokens > 0:
            request = request.with_completion_cap(held.completion_tokens)
        self._held_since[id(held)] = time.monotonic()
        ms = (time.perf_counter() - began) * 1000
        return Grant(request, route.ladder, held, ms=ms, waited_ms=waited)

    async def reserve_fixed(self, agent: AgentConfig, estimate: Estimate) -> Reservation | None:
        """Hold a request whose cost is known before it is sent (an embeddings request: its input
        tokens, no completion): nothing to lower and no cheaper ladder. None: nothing to settle."""
        budget = self._budgets[agent.id]
        if not budget.has_limits:
            return None
        began = time.perf_counter()
        try:
            held = await self._hold(agent.id, estimate)
            if isinstance(held, Denied) and held.contended:
                held = await self._wait_for_room(agent.id, budget, estimate, held, "normal")
        except StateError as exc:
            self._state_changed(ok=False, detail=str(exc), fail_open=budget.fail_open)
            if not budget.fail_open:
                raise Unavailable(f"budget state is unavailable: {exc}", retry_after_s=1) from None
            return None
        self._state_changed(ok=True)
        if isinstance(held, Denied) and held.contended:
            raise budget_busy(held, time.perf_counter() - began, max(1.0, math.ceil(self._hold_s)))
        if isinstance(held, Denied):
            raise budget_exhausted(held)
        self._held_since[id(held)] = time.monotonic()
        return held

    def _default_completion(self, budget: AgentBudget, route: str) -> int:
        """The completion reserved for a request that names no cap."""
        if budget.recent is None:
            return budget.default_completion_tokens
        percentile, margin = budget.recent
        recent = self._recent.get(route)
        size = recent.percentile(percentile) if recent is not None else None
        if size is None:  # too few answers seen yet
            return budget.default_completion_tokens
        return max(16, min(budget.default_completion_tokens, math.ceil(size * margin)))

    def typical_completion(self, route: str) -> int:
        """The median completion of the route's recent LLM answers (0 before enough are seen)."""
        recent = self._recent.get(route)
        size = recent.percentile(0.5) if recent is not None else None
        return size or 0

    def answered(self, route: str, completion_tokens: int, cap: int) -> None:
        """An LLM answer's completion size, for routes whose agents reserve what answers use."""
        recent = self._recent.get(route)
        if recent is None:
            recent = self._recent[route] = RecentCompletions()
        recent.add(completion_tokens, cap)

    async def _wait_for_room(
        self, agent: str, budget: AgentBudget, estimate: Estimate, denied: Denied, lane: Lane
    ) -> Reservation | Denied:
        """Wait (up to `wait_s`) for reservations in flight to settle, trying again after each
        settle here and every POLL_S (for settles elsewhere). The denial that still stands when
        the time is up, or at once when too many of the agent's requests wait already."""
        waiting = self._waiting.setdefault(agent, [0] * len(LANES))
        if budget.wait_s <= 0 or sum(waiting) >= budget.max_waiting:
            return denied
        rank = RANK[lane]
        waiting[rank] += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget.wait_s
        held: Reservation | Denied = denied
        try:
            while isinstance(held, Denied) and held.contended and loop.time() < deadline:
                settled = self._settled
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(settled.wait(), min(POLL_S, deadline - loop.time()))
                if any(waiting[:rank]):
                    continue  # a request of a higher lane waits too: it tries first
                held = await self._hold(agent, estimate)
        finally:
            waiting[rank] -= 1
        return held

    async def _reserve(self, agent: str, estimate: Estimate) -> Reservation | Denied:
        breaker = self._state_breaker
        if breaker is None:  # an in-process ledger has nothing to fail
            return await self._ledger.reserve(agent, estimate)
        if not breaker.allow():
            raise StateError(f"state backend circuit open (retry in {breaker.retry_after():.0f}s)")
        try:
            outcome = await self._ledger.reserve(agent, estimate)
        except StateError:
            breaker.record(failed=True)
            raise
        except BaseException:
            breaker.release()
            raise
        if isinstance(outcome, Reservation) and outcome.lease is not None:
            breaker.release()  # granted from a budget lease in process: Redis was not asked
        else:
            breaker.record(failed=False)
        return outcome

    async def _hold(self, agent: str, estimate: Estimate) -> Reservation | Denied:
        outcome = await self._reserve(agent, estimate)
        if isinstance(outcome, Reservation):
            self._alerts.held(outcome.lease is not None)
            if outcome.crossed:
                self._alerts.crossed(agent, outcome.crossed)
        return outcome

    async def _downgrade(
        self,
        agent: str,
        route: ResolvedRoute,
        request: ChatRequest,
        tokens: tuple[int, int],
        denied: Denied,
        began: float,
    ) -> Grant | None:
        """`on_exhausted: downgrade`: the cheapest upstream that still fits, else the tiers that
        cost nothing (rules, classifier), else None: the denial stands. `tokens`: the prompt's and
        the completion's wanted."""
        prompt_tokens, wanted = tokens
        for option in route.cheapest_first:
            estimate = Estimate(prompt_tokens, wanted, option.input_micro_usd, option.output_micro_usd)
            held = await self._hold(agent, estimate)
            if isinstance(held, Reservation):
                ladder = Ladder([*route.free_tiers, option.tier])
                if held.completion_tokens > 0:
                    request = request.with_completion_cap(held.completion_tokens)
                ms = (time.perf_counter() - began) * 1000
                return Grant(request, ladder, held, downgraded=f"budget: {option.tier.name}", ms=ms)
        if route.free_tiers:
            held = await self._hold(agent, Estimate(0, 0))
            if isinstance(held, Reservation):
                ms = (time.perf_counter() - began) * 1000
                ladder = Ladder(route.free_tiers)
                denial = budget_exhausted(denied)
                return Grant(request, ladder, held, "budget: free tiers only", denial, ms)
        return None

    def _state_changed(self, ok: bool, detail: str = "", fail_open: bool = False) -> None:
        """One log line per change of the state backend's health, not one per request."""
        if ok == self._state_ok:
            return
        self._state_ok = ok
        if ok:
            log.warning("budget state is reachable again")
        else:
            behaviour = "admitting requests (fail_open)" if fail_open else "refusing requests (fail_closed)"
            log.error("budget state unavailable, %s: %s", behaviour, detail)

    def cost(self, usage: Usage, answer: Answer | None, rejected: Sequence[Answer]) -> tuple[Usage, int]:
        """Tokens and micro-dollars spent: the answer's (nothing for answers that cost no tokens)
        plus those of answers that failed validation, which were generated all the same."""
        micro = 0
        price = self.price_of(answer) if answer is not None else None
        if price is not None:
            micro = round(usage.prompt_tokens * price[0] + usage.completion_tokens * price[1])
        for spent in rejected:
            if spent.usage is not None:
                spent_price = self.price_of(spent) or (0.0, 0.0)
                usage = Usage.of(
                    usage.prompt_tokens + spent.usage.prompt_tokens,
                    usage.completion_tokens + spent.usage.completion_tokens,
                )
                micro += round(
                    spent.usage.prompt_tokens * spent_price[0]
                    + spent.usage.completion_tokens * spent_price[1]
                )
        return usage, micro

    async def settle(self, reservation: Reservation | None, tokens: int, micro_usd: int) -> None:
        """Charge what was spent against what was held. Spending can pass the reservation (answers
        that failed validation and were retried): the overage is charged, never forgiven. A remote
        ledger settles after the answer has gone out (the request does not wait for the round
        trip, and a client that leaves cannot cancel it); on a state error it keeps trying, and
        what it could not settle stays held until its window ends: never an overspend."""
        if reservation is None:
            return
        settling = self._ledger.settle(reservation, tokens, micro_usd)
        if self._ledger.remote:
            asyncio.ensure_future(settling).add_done_callback(
                lambda done: self._settled_one(reservation, done)
            )
            return
        try:
            await settling
        finally:
            self._settled_one(reservation, None)

    def _settled_one(self, reservation: Reservation, done: asyncio.Future[None] | None) -> None:
        if done is not None and not done.cancelled():
            done.exception()  # a state error: the ledger keeps trying in the background
        began = self._held_since.pop(id(reservation), None)
        if began is not None:
            self._hold_s += 0.1 * (time.monotonic() - began - self._hold_s)
        settled, self._settled = self._settled, asyncio.Event()
        settled.set()  # requests waiting for room try again

    def price_of(self, answer: Answer) -> tuple[float, float] | None:
        if answer.upstream is None:
            return None
        return (self._batch_prices if answer.batched else self._prices).get(answer.upstream)
