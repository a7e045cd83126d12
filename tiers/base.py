"""The Tier interface: every tier answers a request or declines with a reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from tiers.lanes import Lane
from tiers.types import Answer, ChatRequest, Escalate


class TierRequest(msgspec.Struct, kw_only=True):
    """A request with what the gateway already worked out about it, so no tier repeats the work."""

    chat: ChatRequest
    agent: str
    prompt_tokens: Callable[[], int]  # counted on first use (budgets.tokens.PromptTokens)
    include_usage: bool = False
    max_repeated_chunks: int | None = None  # the agent's own limit, over the upstream's
    lane: Lane = "normal"
    waited_ms: float = 0.0  # waiting for an upstream's place (added to by the tiers that wait)
    deferred: bool = False  # a Batch API line: an upstream with a Batch API of its own may take it late


class Tier(Protocol):
    name: str

    async def decide(self, request: TierRequest) -> Answer | Escalate: ...
