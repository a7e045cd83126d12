"""Who may answer a request: the one place that turns its route, its budget and its complexity into
the ladder to walk, with the tiers passed over and why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import msgspec

from budgets.tokens import PromptTokens
from gateway.config.models import AgentConfig
from gateway.pipeline.budget import BudgetStep, Grant
from gateway.pipeline.routes import ResolvedRoute
from tiers.lanes import Lane
from tiers.types import ChatRequest


class Plan(msgspec.Struct, frozen=True):
    route: ResolvedRoute
    grant: Grant  # the request as it may go upstream, the ladder it may walk, its reservation
    skip: Mapping[str, str] | None  # tiers passed over, with the reason
    complexity: float | None


class Paused(Protocol):
    def skips(self, route: str) -> Mapping[str, str] | None: ...


class NothingPaused:
    def skips(self, route: str) -> Mapping[str, str] | None:
        return None


class Planner:
    def __init__(self, budget: BudgetStep, paused: Paused) -> None:
        self._budget = budget
        self._paused = paused

    async def plan(
        self,
        agent: AgentConfig,
        route: ResolvedRoute,
        request: ChatRequest,
        prompt: PromptTokens,
        lane: Lane = "normal",
    ) -> Plan:
        """Reserve the budget (raising when it is spent), then pass over the smaller LLMs for a
        complex request; a ladder the budget shortened is walked as it is."""
        grant = await self._budget.reserve(agent, route, request, prompt, lane)
        complexity, skip = None, None
        if route.complexity is not None and grant.downgraded is None:
            complexity, skip = route.complexity.skip(request, prompt())
        paused = self._paused.skips(route.name)
        if paused is not None:  # a quality breach sends the route past its audited tiers
            skip = {**paused, **(skip or {})}
        return Plan(route, grant, skip, complexity)
