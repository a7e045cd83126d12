"""One request's state on its way through the gateway, and what the path hands back to the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from budgets.policy import Reservation
from gateway.config import AgentConfig
from gateway.errors import GatewayError
from tiers.types import ChatRequest


@dataclass(slots=True)
class ChatResult:
    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    status: int = 200


@dataclass(slots=True)
class Turn:
    """Everything one request accumulates on its way through, for its decision record."""

    id: str
    agent: AgentConfig
    request: ChatRequest
    route: str
    started: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    reservation: Reservation | None = None
    remaining_tokens: int | None = None
    cache: str = "bypass"
    downgraded: str | None = None
    complexity: float | None = None
    denial: GatewayError | None = None  # what stands if a downgrade to free tiers cannot answer
