"""The escalation ladder: try a route's tiers cheapest first until one answers."""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec

from tiers.base import Tier, TierRequest
from tiers.types import Answer, Escalate


class Attempt(msgspec.Struct, kw_only=True):
    """One tier's turn on the ladder, as the decision record shows it."""

    tier: str
    outcome: str  # "answered" | "escalated" | "skipped" | "denied"
    reason: str | None = None
    confidence: float | None = None
    latency_ms: float = 0.0
    status: int | None = None


class LadderResult(msgspec.Struct, kw_only=True):
    answer: Answer | None
    attempts: list[Attempt]
    failures: list[Escalate]


class Ladder:
    def __init__(self, tiers: Sequence[Tier]) -> None:
        self.tiers = tuple(tiers)
        self.names = tuple(t.name for t in self.tiers)

    def index_of(self, name: str) -> int | None:
        for i, tier_name in enumerate(self.names):
            if tier_name == name or tier_name == f"llm:{name}":
                return i
        return None

    async def run(self, request: TierRequest, skip: dict[str, str] | None = None) -> LadderResult:
        """Walk the tiers in order; `skip` names tiers passed over, with the reason recorded."""
        attempts: list[Attempt] = []
        failures: list[Escalate] = []
        i = 0
        while i < len(self.tiers):
            tier = self.tiers[i]
            if skip and tier.name in skip:
                attempts.append(Attempt(tier=tier.name, outcome="skipped", reason=skip[tier.name]))
                i += 1
                continue
            began = time.perf_counter()
            result = await tier.decide(request)
            took = (time.perf_counter() - began) * 1000
            if isinstance(result, Answer):
                attempts.append(
                    Attempt(tier=tier.name, outcome="answered", confidence=result.confidence, latency_ms=took)
                )
                return LadderResult(answer=result, attempts=attempts, failures=failures)
            failures.append(result)
            attempts.append(
                Attempt(
                    tier=tier.name,
                    outcome="denied" if result.final else "escalated",
                    reason=result.reason,
                    confidence=result.confidence,
                    latency_ms=took,
                    status=result.status,
                )
            )
            if result.final:
                break
            i += 1
            if result.skip_to is not None:
                target = self.index_of(result.skip_to)
                if target is not None and target > i:
                    attempts.extend(
                        Attempt(tier=name, outcome="skipped", reason=f"rule escalated to {result.skip_to}")
                        for name in self.names[i:target]
                    )
                    i = target
        return LadderResult(answer=None, attempts=attempts, failures=failures)
