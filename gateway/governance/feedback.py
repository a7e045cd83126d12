"""Feedback: what an agent (on its own decisions) or a reviewer says of a decision.

One piece of feedback per decision and source; a repeat replaces it. A `label` on a decision of
a label-answering tier is a correction: a training row for the route's classifier."""

from __future__ import annotations

import math
import time

import msgspec

from gateway.errors import BadRequest, NotConfigured, NotFound
from gateway.governance.decisions import find_decision
from gateway.http.wire import decode_json
from gateway.observe.records import RecentRecords
from gateway.store.protocol import Feedback, Source
from gateway.store.runtime import StoreRuntime

MAX_LABEL_CHARS = 200
MAX_COMMENT_CHARS = 4000
MAX_BODY_BYTES = 64 * 1024


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    decision_id: str
    label: str | None = None
    correct: bool | None = None
    score: float | None = None
    comment: str | None = None


_decoder = msgspec.json.Decoder(FeedbackBody)


def parse_feedback(body: bytes) -> FeedbackBody:
    said = decode_json(body, _decoder, MAX_BODY_BYTES)
    if not said.decision_id:
        raise BadRequest("decision_id must not be empty", param="decision_id")
    if said.label is None and said.correct is None and said.score is None and said.comment is None:
        raise BadRequest("say something of the decision: label, correct, score or comment", param="label")
    if said.label is not None and not (0 < len(said.label.strip()) <= MAX_LABEL_CHARS):
        raise BadRequest(f"label must hold 1 to {MAX_LABEL_CHARS} characters", param="label")
    if said.score is not None and not math.isfinite(said.score):
        raise BadRequest("score must be a finite number", param="score")
    if said.comment is not None and len(said.comment) > MAX_COMMENT_CHARS:
        raise BadRequest(f"comment must hold at most {MAX_COMMENT_CHARS} characters", param="comment")
    return said


def feedback_body(said: Feedback) -> bytes:
    return msgspec.json.encode({"object": "feedback", **msgspec.structs.asdict(said)})


async def record_feedback(
    body: bytes,
    source: Source,
    agent: str | None,
    store: StoreRuntime | None,
    recent: RecentRecords,
) -> Feedback:
    """Store what `source` said; `agent` (for agents' own feedback) must own the decision, and
    another agent's decision is as unknown as one that never was."""
    said = parse_feedback(body)
    if store is None:
        raise NotConfigured("feedback needs the decision store: set store.url in the config")
    found = await find_decision(said.decision_id, store, recent)
    if found is None or (agent is not None and found.agent != agent):
        raise NotFound(f"no decision {said.decision_id!r}", param="decision_id", code="decision_not_found")
    label = None if said.label is None else said.label.strip()
    agreed = said.correct
    if agreed is None and label is not None and found.label is not None:  # a label is a verdict too
        agreed = label == found.label
    feedback = Feedback(
        decision_id=found.id,
        source=source,
        time=time.time(),
        agent=found.agent,
        route=found.route,
        label=label,
        correct=said.correct,
        score=said.score,
        comment=said.comment,
        agreed=agreed,
        tier=found.tier,
        confidence=found.confidence,
    )
    await store.store.put_feedback(feedback)
    return feedback
