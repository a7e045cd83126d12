"""The budget step of the request path: reserve before the ladder (lowering the completion cap
to what is granted, or downgrading), settle after it with what was actually spent."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from budgets.ledger import Ledger, StateError
from budgets.policy import Denied, Estimate, Reservation
from budgets.tokens import PromptTokens
from gateway.budget_alerts import BudgetAlerts
from gateway.errors import RateLimited, Unavailable
from gateway.route_table import ResolvedRoute
from gateway.turn import Turn
from routing.ladder import Ladder
from tiers.circuit import CircuitBreaker, CircuitSettings
from tiers.types import Answer, ChatRequest, Usage

log = logging.getLogger("tiergate")


@dataclass(frozen=True, slots=True)
class AgentBudget:
    """What the chat path needs to know of an agent's budget to lower `max_tokens` safely."""

    limited: bool  # a token or cost limit applies (to the agent or its team)
    default_completion_tokens: int
    fail_open: bool
    downgrade: bool = False
    has_limits: bool = True  # any limit at all; without one there is nothing to reserve or settle


def budget_exhausted(denied: Denied) -> RateLimited:
    return RateLimited(
        f"budget exhausted: {denied.message}; resets in {denied.retry_after_s:.0f}s",
        code="budget_exhausted",
        retry_after_s=denied.retry_after_s,
    )


class BudgetStep:
    def __init__(
        self,
        ledger: Ledger,
        budgets: dict[str, AgentBudget],
        alerts: BudgetAlerts,
        prices: dict[str, tuple[float, float]],
    ) -> None:
        self._ledger = ledger
        self._budgets = budgets
        self._alerts = alerts
        self._prices = prices  # upstream -> micro-dollars per (input, output) token
        self._state_ok = True
        # A breaker around a remote state backend: once it keeps failing, requests stop waiting out
        # its timeout one by one and get the configured behaviour at once, until a probe succeeds.
        self._state_breaker = (
            CircuitBreaker(CircuitSettings(failures=3, cooldown_s=2.0)) if ledger.remote else None
        )

    async def reserve(
        self, turn: Turn, route: ResolvedRoute, prompt: PromptTokens
    ) -> tuple[ChatRequest, Ladder]:
        """Hold the most this request can cost; return the request with its completion cap lowered
        to what was granted (so the upstream can never spend more than was reserved), and the
        ladder to walk (a shorter one when the budget forced a downgrade)."""
        budget = self._budgets[turn.agent.id]
        request = turn.request
        if not budget.has_limits:  # no budget state is touched, so no state outage refuses it
            return request, route.ladder
        cap = request.completion_cap()
        if route.max_output_tokens is not None:
            cap = min(cap or route.max_output_tokens, route.max_output_tokens)
        wanted = cap if cap is not None else budget.default_completion_tokens
        prompt_tokens = prompt()  # counted only here, for an agent with limits
        began = time.perf_counter()
        try:
            outcome = await self._hold(
                turn, Estimate(prompt_tokens, wanted, route.input_micro_usd, route.output_micro_usd)
            )
            ladder = route.ladder
            if isinstance(outcome, Denied) and budget.downgrade and outcome.limit.metric != "requests":
                outcome, ladder = await self._downgrade(turn, route, prompt_tokens, wanted, outcome)
        except StateError as exc:
            self._state_changed(ok=False, detail=str(exc), fail_open=budget.fail_open)
            if not budget.fail_open:
                raise Unavailable(f"budget state is unavailable: {exc}", retry_after_s=1) from None
            return request, route.ladder
        finally:
            turn.latency_ms["budget"] = (time.perf_counter() - began) * 1000
        self._state_changed(ok=True)
        if isinstance(outcome, Denied):
            raise budget_exhausted(outcome)
        if (
            budget.limited
            and outcome.completion_tokens > 0
            and (cap is None or outcome.completion_tokens < cap)
        ):
            name = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
            request = msgspec.structs.replace(request, **{name: outcome.completion_tokens})
        return request, ladder

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
        breaker.record(failed=False)
        return outcome

    async def _hold(self, turn: Turn, estimate: Estimate) -> Reservation | Denied:
        outcome = await self._reserve(turn.agent.id, estimate)
        if isinstance(outcome, Reservation):
            turn.reservation = outcome
            turn.remaining_tokens = outcome.remaining_tokens
            if outcome.crossed:
                self._alerts.crossed(turn.agent.id, outcome.crossed)
        return outcome

    async def _downgrade(
        self, turn: Turn, route: ResolvedRoute, prompt_tokens: int, wanted: int, denied: Denied
    ) -> tuple[Reservation | Denied, Ladder]:
        """`on_exhausted: downgrade`: the cheapest upstream that still fits, else the tiers that
        cost nothing (rules, classifier), else the denial stands."""
        for option in route.cheapest_first:
            estimate = Estimate(prompt_tokens, wanted, option.input_micro_usd, option.output_micro_usd)
            outcome = await self._hold(turn, estimate)
            if isinstance(outcome, Reservation):
                turn.downgraded = f"budget: {option.tier.name}"
                return outcome, Ladder([*route.free_tiers, option.tier])
        if route.free_tiers:
            outcome = await self._hold(turn, Estimate(0, 0))
            if isinstance(outcome, Reservation):
                turn.downgraded = "budget: free tiers only"
                turn.denial = budget_exhausted(denied)
                return outcome, Ladder(route.free_tiers)
        return denied, route.ladder

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

    async def settle(
        self,
        turn: Turn,
        usage: Usage,
        answer: Answer | None,
        rejected: Sequence[Answer] = (),
    ) -> float:
        """Charge what was spent (nothing, for answers that cost no tokens), including answers that
        failed validation; returns USD. Those can take a request past its reservation: the overage
        is charged, never forgiven."""
        micro = 0
        upstream_price = self.price_of(answer) if answer is not None else None
        if upstream_price is not None:
            micro = round(
                usage.prompt_tokens * upstream_price[0] + usage.completion_tokens * upstream_price[1]
            )
        for spent in rejected:
            if spent.usage is not None:
                price = self.price_of(spent) or (0.0, 0.0)
                usage = Usage.of(
                    usage.prompt_tokens + spent.usage.prompt_tokens,
                    usage.completion_tokens + spent.usage.completion_tokens,
                )
                micro += round(
                    spent.usage.prompt_tokens * price[0] + spent.usage.completion_tokens * price[1]
                )
        if turn.reservation is not None:
            reservation, turn.reservation = turn.reservation, None
            if turn.remaining_tokens is not None:
                turn.remaining_tokens += reservation.tokens - usage.total_tokens
            # On a state error the reservation stays held until its window ends: never an overspend.
            with contextlib.suppress(StateError):
                await self._ledger.settle(reservation, usage.total_tokens, micro)
        return micro / 1_000_000

    def price_of(self, answer: Answer) -> tuple[float, float] | None:
        return None if answer.upstream is None else self._prices.get(answer.upstream)
