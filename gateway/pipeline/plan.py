"""Who may answer a request: the one place that turns its route, its budget and its complexity into
the ladder to walk, with the tiers passed over and why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from budgets.policy import Reservation
from budgets.tokens import PromptTokens
from gateway.config.models import AgentConfig
from gateway.errors import GatewayError
from gateway.pipeline.budget import BudgetStep
from gateway.pipeline.routes import ResolvedRoute
from routing.ladder import Ladder
from tiers.types import ChatRequest


@dataclass(frozen=True, slots=True)
class Plan:
    route: ResolvedRoute
    request: ChatRequest  # as it may go upstream: its completion cap lowered to what was granted
    ladder: Ladder
    skip: Mapping[str, str] | None  # tiers passed over, with the reason
    reservation: Reservation | None
    downgraded: str | None  # why a shorter ladder than the route's is walked
    denial: GatewayError | None  # the error that stands if a downgraded ladder cannot answer
    complexity: float | None
    budget_ms: float

    @property
    def remaining_tokens(self) -> int | None:
        """The tightest token window's remaining tokens once this request's hold is counted."""
        return None if self.reservation is None else self.reservation.remaining_tokens


class Planner:
    def __init__(self, budget: BudgetStep) -> None:
        self._budget = budget

    async def plan(
        self, agent: AgentConfig, route: ResolvedRoute, request: ChatRequest, prompt: PromptTokens
    ) -> Plan:
        """Reserve the budget (raising when it is spent), then pass over the smaller LLMs for a
        complex request; a ladder the budget shortened is walked as it is."""
        grant = await self._budget.reserve(agent, route, request, prompt)
        complexity, skip = None, None
        if route.complexity is not None and grant.downgraded is None:
            complexity, skip = route.complexity.skip(request, prompt())
        return Plan(
            route=route,
            request=grant.request,
            ladder=grant.ladder,
            skip=skip,
            reservation=grant.reservation,
            downgraded=grant.downgraded,
            denial=grant.denial,
            complexity=complexity,
            budget_ms=grant.ms,
        )
