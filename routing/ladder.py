"""The escalation ladder: try a route's tiers cheapest first until one answers."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec

from tiers.base import Tier, TierRequest
from tiers.types import Answer, Escalate, Message


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
    rejected: list[Answer] = []  # answers that failed review: their tokens were spent all the same


class Reviewer(Protocol):
    def review(self, answer: Answer) -> Answer | str:
        """The answer as it will be returned, or why it cannot be."""
        ...


REPAIR_PROMPT = (
    "Your previous reply did not match the required format: {error}. "
    "Reply again with only the corrected output."
)


def repair_request(request: TierRequest, answer: Answer, error: str) -> TierRequest:
    """The same request with the failed answer and the validation error appended, for one retry."""
    messages = [
        *request.chat.messages,
        Message(role="assistant", content=answer.content or ""),
        Message(role="user", content=REPAIR_PROMPT.format(error=error)),
    ]
    return msgspec.structs.replace(request, chat=msgspec.structs.replace(request.chat, messages=messages))


class Ladder:
    def __init__(self, tiers: Sequence[Tier]) -> None:
        self.tiers = tuple(tiers)
        self.names = tuple(t.name for t in self.tiers)

    def index_of(self, name: str) -> int | None:
        for i, tier_name in enumerate(self.names):
            if tier_name == name or tier_name == f"llm:{name}":
                return i
        return None

    async def run(
        self,
        request: TierRequest,
        skip: Mapping[str, str] | None = None,
        reviewer: Reviewer | None = None,
        repair: bool = False,
    ) -> LadderResult:
        """Walk the tiers in order; `skip` names tiers passed over, with the reason recorded.
        A `reviewer` checks each complete answer: one that fails is shown back to its LLM once
        (with `repair`), then the next tier is tried."""
        attempts: list[Attempt] = []
        failures: list[Escalate] = []
        rejected: list[Answer] = []
        i = 0
        while i < len(self.tiers):
            tier = self.tiers[i]
            if skip and tier.name in skip:
                attempts.append(Attempt(tier=tier.name, outcome="skipped", reason=skip[tier.name]))
                i += 1
                continue
            began = time.perf_counter()
            result = await tier.decide(request)
            if isinstance(result, Answer) and reviewer is not None and result.stream is None:
                result = await self._review(
                    tier, request, result, reviewer, repair and result.upstream is not None, rejected
                )
            attempts.append(attempt_of(tier.name, result, (time.perf_counter() - began) * 1000))
            if isinstance(result, Answer):
                return LadderResult(answer=result, attempts=attempts, failures=failures, rejected=rejected)
            failures.append(result)
            if result.final:
                break
            i += 1
            target = self.index_of(result.skip_to) if result.skip_to is not None else None
            if target is not None and target > i:
                attempts.extend(
                    Attempt(tier=name, outcome="skipped", reason=f"rule escalated to {result.skip_to}")
                    for name in self.names[i:target]
                )
                i = target
        return LadderResult(answer=None, attempts=attempts, failures=failures, rejected=rejected)

    @staticmethod
    async def _review(
        tier: Tier,
        request: TierRequest,
        answer: Answer,
        reviewer: Reviewer,
        repair: bool,
        rejected: list[Answer],
    ) -> Answer | Escalate:
        """The answer as reviewed; a failing one is asked again once with the error (when
        `repair`), and escalates if it fails again. Failed answers join `rejected`."""
        checked = reviewer.review(answer)
        result: Answer | Escalate = answer
        if isinstance(checked, str) and repair:
            rejected.append(answer)
            result = await tier.decide(repair_request(request, answer, checked))
            checked = reviewer.review(result) if isinstance(result, Answer) else checked
        if not isinstance(checked, str):
            return checked
        if isinstance(result, Answer):
            rejected.append(result)
        return Escalate(tier=tier.name, reason=f"output failed validation: {checked}", status=502)


def attempt_of(tier: str, result: Answer | Escalate, took_ms: float) -> Attempt:
    if isinstance(result, Answer):
        return Attempt(tier=tier, outcome="answered", confidence=result.confidence, latency_ms=took_ms)
    return Attempt(
        tier=tier,
        outcome="denied" if result.final else "escalated",
        reason=result.reason,
        confidence=result.confidence,
        latency_ms=took_ms,
        status=result.status,
    )
