"""What the rest of the gateway asks of the store, whichever engine holds it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import msgspec

Source = Literal["agent", "reviewer"]


class Cursor(msgspec.Struct, array_like=True, frozen=True):
    """Where a page of decisions (newest first) ended: the last one's time and id."""

    time: float
    id: str


class DecisionQuery(msgspec.Struct, kw_only=True, frozen=True):
    agent: str | None = None
    route: str | None = None
    tier: str | None = None
    status: int | None = None
    since: float | None = None  # inclusive, epoch seconds
    until: float | None = None  # exclusive
    limit: int = 50
    after: Cursor | None = None


class Page(msgspec.Struct, frozen=True):
    records: list[bytes]  # each a decision record's JSON, newest first
    next: Cursor | None


class Feedback(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    decision_id: str
    source: Source
    time: float
    agent: str
    route: str
    label: str | None = None
    correct: bool | None = None
    score: float | None = None
    comment: str | None = None
    agreed: bool | None = None  # the answer was right (true), wrong (false), or it does not say
    tier: str | None = None  # of the answer the feedback is about
    confidence: float | None = None


class Audit(msgspec.Struct, kw_only=True, frozen=True):
    decision_id: str
    time: float
    route: str
    tier: str
    reference: str
    agreed: bool
    tokens: int
    label: str | None = None
    confidence: float | None = None
    reference_label: str | None = None


class Outcome(msgspec.Struct, frozen=True):
    """One verdict on a cheap tier's answer, from an audit or from feedback."""

    time: float
    agreed: bool
    source: Literal["audit", "feedback"]
    tier: str | None
    confidence: float | None


class StoredDecision(msgspec.Struct, frozen=True):
    record: bytes
    feedback: list[Feedback]
    audit: Audit | None = None


class Event(msgspec.Struct, kw_only=True, frozen=True):
    time: float
    kind: str
    route: str | None = None
    detail: dict[str, Any] = {}


class Store(Protocol):
    async def add_records(self, lines: Sequence[bytes]) -> None:
        """Store these decision records, each the JSON line the gateway wrote; the store takes the
        columns it filters on out of the JSON itself. A record already stored (a spool shipped
        twice) is left as it is. A line that is not a record fails the whole call, storing none."""
        ...

    async def decision(self, decision_id: str) -> StoredDecision | None: ...

    async def decisions(self, query: DecisionQuery) -> Page: ...

    async def put_feedback(self, feedback: Feedback) -> None:
        """Store it, replacing what the same source said of the same decision before."""
        ...

    async def feedback(self, route: str, since: float | None = None) -> list[Feedback]: ...

    async def feedback_of(self, decision_id: str) -> list[Feedback]: ...

    async def add_audit(self, audit: Audit) -> None: ...

    async def audits(self, route: str, limit: int, since: float | None = None) -> list[Audit]: ...

    async def outcomes(self, route: str, window: int) -> list[Outcome]:
        """The latest `window` verdicts on the route's answers (audits and feedback), newest first."""
        ...

    async def tier_counts(self, route: str, since: float) -> dict[str, int]:
        """Decisions of the route since then, by the tier that answered ("none": nobody did)."""
        ...

    async def records(self, decision_ids: Sequence[str]) -> dict[str, bytes]:
        """The records of these decisions (those still stored), by id."""
        ...

    async def add_event(self, event: Event) -> None: ...

    async def events(self, route: str | None = None, since: float | None = None) -> list[Event]: ...

    async def prune(self, before: float) -> int:
        """Delete decisions (and what was said of them) older than `before`; how many went."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


ApprovalStatus = Literal["pending", "approved", "edited", "rejected", "expired"]


class Approval(msgspec.Struct, kw_only=True, frozen=True):
    """An answer held for a person (or approved for a trusted agent), and what was decided."""

    id: str
    time: float
    agent: str
    route: str
    decision_id: str
    request_hash: str
    status: ApprovalStatus
    reason: str
    condition: str
    tier: str
    confidence: float
    request: str
    answer: str
    expires_at: float
    decided_at: float | None = None
    note: str | None = None
    edited: str | None = None
    automatic: bool = False
    review: Literal["pending", "done"] | None = None
    delivered: bool = False


class Trust(msgspec.Struct, kw_only=True, frozen=True):
    """An agent's record for one condition: approvals in a row since the last edit or rejection."""

    agent: str
    condition: str
    streak: int
    trusted: bool
    since: float
    reason: str


class ApprovalStore(Protocol):
    async def add_approval(self, approval: Approval) -> None: ...

    async def approval(self, approval_id: str) -> Approval | None: ...

    async def approval_of(self, decision_id: str) -> Approval | None:
        """The approval that held this decision's answer, if one did."""
        ...

    async def approvals(
        self, status: ApprovalStatus | None = None, review: bool = False, limit: int = 100
    ) -> list[Approval]:
        """Newest first; `review`: only trusted answers waiting for a look after the fact."""
        ...

    async def latest_approval(self, agent: str, request_hash: str, since: float) -> Approval | None:
        """The newest approval of this agent for this request since then, unless delivered."""
        ...

    async def decide(
        self, approval_id: str, status: ApprovalStatus, now: float, note: str | None, edited: str | None
    ) -> bool:
        """Record a decision on a pending approval (or on a trusted answer waiting for review);
        False when it was decided already: each approval is decided exactly once."""
        ...

    async def delivered(self, approval_id: str) -> None: ...

    async def expire(self, now: float) -> list[Approval]:
        """Mark pending approvals past their expiry as expired; the ones this call expired."""
        ...

    async def trust_of(self, agent: str, condition: str) -> Trust | None: ...

    async def put_trust(self, trust: Trust) -> None: ...

    async def trusts(self) -> list[Trust]: ...
