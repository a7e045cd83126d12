"""Model names to routes: each route a ladder of tiers, plus what it may cost at most."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from gateway.config.models import AgentConfig, RouteCacheConfig
from gateway.errors import BadRequest, Forbidden, NotFound, clip
from routing.complexity import ComplexityScorer
from routing.ladder import Ladder
from tiers.base import Tier
from tiers.types import ChatRequest


@dataclass(frozen=True, slots=True)
class UpstreamOption:
    """One LLM tier of a route with its prices (micro-dollars per token), for downgrades."""

    name: str
    tier: Tier
    input_micro_usd: float
    output_micro_usd: float


@dataclass(frozen=True, slots=True)
class ComplexityRouting:
    """Skip a route's smaller LLMs when a request scores above `large_above`."""

    scorer: ComplexityScorer
    large_above: float
    smaller: tuple[str, ...]  # tier names of every LLM but the last

    def skip(self, request: ChatRequest, prompt_tokens: int) -> tuple[float, dict[str, str] | None]:
        score = self.scorer.score(request, prompt_tokens)
        if score <= self.large_above:
            return score, None
        reason = f"complexity {score:.2f} above {self.large_above:.2f}"
        return score, dict.fromkeys(self.smaller, reason)


@dataclass(frozen=True, slots=True)
class ResolvedRoute:
    name: str
    ladder: Ladder
    # The dearest upstream that may answer, in micro-dollars per token, so a reservation is an upper bound.
    input_micro_usd: float = 0.0
    output_micro_usd: float = 0.0
    max_output_tokens: int | None = None
    cache: RouteCacheConfig = field(default_factory=RouteCacheConfig)
    output_schema: dict[str, Any] | None = None
    free_tiers: tuple[Tier, ...] = ()  # tiers that cost no tokens (rules, classifier)
    cheapest_first: tuple[UpstreamOption, ...] = ()
    complexity: ComplexityRouting | None = None
    repair: bool = True  # show a failed structured answer back to its LLM once
    shadow: Shadow | None = None  # a candidate classifier, scored and recorded, never served
    deferrable: bool = False  # its first LLM has a Batch API of its own (Batch API lines go there)


def allowed(agent: AgentConfig, name: str) -> bool:
    return "*" in agent.routes or name in agent.routes


class Shadow(Protocol):
    def score(self, text: str) -> ShadowDecision: ...


class ShadowDecision(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a candidate classifier would have answered: its label, or None where it escalates."""

    confidence: float
    label: str | None = None


@dataclass(frozen=True, slots=True)
class RouteTable:
    routes: dict[str, ResolvedRoute]
    embeddings_only: frozenset[str] = frozenset()  # routes with no tier to answer a chat

    def resolve(self, agent: AgentConfig, model: str) -> ResolvedRoute:
        route = self.routes.get(model)
        if route is None and model in self.embeddings_only:
            raise BadRequest(
                f"the model {clip(model)!r} serves embeddings only (POST /v1/embeddings)", param="model"
            )
        if route is None:
            raise NotFound(
                f"the model {clip(model)!r} does not exist; GET /v1/models lists yours", param="model"
            )
        if not allowed(agent, model):
            raise Forbidden(
                f"agent {agent.id!r} may not use the model {clip(model)!r}",
                param="model",
                code="model_not_allowed",
            )
        return route

    def visible_to(self, agent: AgentConfig) -> list[str]:
        return [name for name in (*self.routes, *sorted(self.embeddings_only)) if allowed(agent, name)]
