"""Finding a decision wherever it is: in the store, or still on its way there.

A decision is written to its worker's spool before the answer goes out and reaches the store
within a shipping interval or so. A lookup that comes sooner (feedback posted right after an
answer) looks in this worker's recent records, then nudges the shipper and waits a little for the
store: the decision may have been answered by another worker."""

from __future__ import annotations

import asyncio
import re
import time

import msgspec

from gateway.observe.records import RecentRecords
from gateway.store.protocol import Audit, Feedback
from gateway.store.runtime import StoreRuntime

WAIT_STEP_S = 0.05
DECISION_ID = re.compile(r"^[0-9a-f]{32}$")  # see RequestPath: a process prefix and a counter


class FoundDecision(msgspec.Struct, frozen=True):
    id: str
    agent: str
    route: str
    tier: str | None
    label: str | None
    confidence: float | None
    record: bytes
    feedback: list[Feedback]
    audit: Audit | None = None


class _Owner(msgspec.Struct):
    id: str
    agent: str
    route: str
    tier: str | None = None
    label: str | None = None
    confidence: float | None = None


_decode_owner = msgspec.json.Decoder(_Owner).decode


async def find_decision(
    decision_id: str, store: StoreRuntime | None, recent: RecentRecords
) -> FoundDecision | None:
    if not DECISION_ID.match(decision_id):
        return None
    if store is not None:
        found = await store.store.decision(decision_id)
        if found is not None:
            return _found(found.record, found.feedback, found.audit)
    line = recent.get(decision_id)
    if line is not None:
        feedback = []
        if store is not None:  # what was said of it may be stored before the decision itself
            feedback = await store.store.feedback_of(decision_id)
        return _found(line, feedback)
    if store is None:
        return None
    store.shipper.nudge()
    deadline = time.monotonic() + store.config.lookup_wait_s
    while time.monotonic() < deadline:
        await asyncio.sleep(WAIT_STEP_S)
        found = await store.store.decision(decision_id)
        if found is not None:
            return _found(found.record, found.feedback, found.audit)
    return None


def _found(record: bytes, feedback: list[Feedback], audit: Audit | None = None) -> FoundDecision:
    owner = _decode_owner(record)
    return FoundDecision(
        owner.id, owner.agent, owner.route, owner.tier, owner.label, owner.confidence, record, feedback, audit
    )
