"""What the request path hands back to the HTTP edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def decision_headers(decision_id: str, tier: str, confidence: float) -> dict[str, str]:
    """The headers that name a decision and who answered it."""
    return {
        "x-tiergate-decision-id": decision_id,
        "x-tiergate-tier": tier,
        "x-tiergate-confidence": f"{confidence:.4f}",
    }


class Frames(Protocol):
    """A stream's frames; the edge closes it however the response ends, so a stream that never
    started still releases what its request holds."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True, frozen=True)
class ChatResult:
    headers: dict[str, str]
    body: bytes | None = None
    stream: Frames | None = None
    status: int = 200
