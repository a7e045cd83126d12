"""The approval stage of the request path: an answer that meets a condition of its route's (or
agent's) policy is held for a person instead of delivered.

The answer is settled first (its tokens are charged when generated), then stored as an approval
with the request, the tier, the confidence and the condition that held, and announced to the
webhook. The request waits up to `hold_s` for a reviewer's decision (`decide`): approved or edited,
it gets the answer (200); rejected, 403 `approval_rejected`; still pending, 409 `approval_pending`
with Retry-After, which the official clients retry by themselves. A re-sent request (the same
content from the same agent, or any request naming `x-tiergate-approval-id`) runs no tier again:
it gets the decision once made, waits again while pending, and gets 403 `approval_expired` once
the approval expired. Everything lives in the store, so a restarted gateway, or another one on the
same store, answers alike.

Trust is earned per agent and condition (gateway/approval/trust.py): a trusted agent's matching
answers are approved at once, a sample of them queued for review after the fact."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from gateway.approval.conditions import describe, first_holding
from gateway.approval.trust import TrustKeeper
from gateway.config.approvals import ApprovalPolicy, ApprovalsConfig
from gateway.config.models import AgentConfig, RouteConfig
from gateway.errors import BadRequest, ErrorBody, Forbidden, GatewayError, NotFound
from gateway.http.responses import frames_of_body
from gateway.observe.webhook import Webhook
from gateway.pipeline.results import STREAM_HEADERS, ChatResult, decision_headers
from gateway.store.protocol import Approval, ApprovalStore, Feedback, Store
from routing.ladder import Attempt
from tiers.types import Answer, ChatRequest

log = logging.getLogger("tiergate")

POLL_S = 0.25  # how often a held request looks for a decision made by another worker or gateway
RETRY_AFTER_S = 1  # a re-sent request waits again (up to hold_s), so the client may come back soon
APPROVAL_HEADER = "x-tiergate-approval-id"


class _ApprovalErrorBody(ErrorBody):
    approval_id: str | None = None


class _ApprovalEnvelope(msgspec.Struct):
    error: _ApprovalErrorBody


class ApprovalError(GatewayError):
    """An error about an approval: the error object and a header carry its id."""

    def __init__(self, message: str, *, code: str, approval_id: str, retry_after_s: float | None = None):
        super().__init__(message, code=code, retry_after_s=retry_after_s)
        self.approval_id = approval_id

    def body(self) -> bytes:
        error = _ApprovalErrorBody(self.message, self.type, self.param, self.code, self.approval_id)
        return msgspec.json.encode(_ApprovalEnvelope(error))

    def headers(self) -> dict[str, str]:
        return {**super().headers(), APPROVAL_HEADER: self.approval_id}


class ApprovalRefused(ApprovalError, Forbidden):
    """Rejected by a reviewer, or expired before anyone decided (403)."""


class ApprovalPending(ApprovalError):
    status = 409
    type = "invalid_request_error"


class ApprovalRequested(msgspec.Struct):
    """What the webhook receives for each approval asked."""

    event: str
    id: str
    agent: str
    route: str
    reason: str
    tier: str
    confidence: float
    expires_at: float
    link: str


class Decision(msgspec.Struct, forbid_unknown_fields=True):
    """A reviewer's decision: `POST /admin/approvals/{id}`."""

    decision: Literal["approve", "reject", "edit"]
    content: str | dict[str, Any] | None = None  # edit: the new content, or {"tool_calls": [...]}
    reason: str | None = None


_STATUS = {"approve": "approved", "reject": "rejected", "edit": "edited"}


def request_hash(agent: str, route: str, request: ChatRequest) -> str:
    """What makes two requests the same for a re-send: the agent, the route and the content (a
    stream and a whole answer of the same content are the same request)."""
    content = msgspec.json.encode(msgspec.structs.replace(request, stream=False, stream_options=None))
    return hashlib.sha256(f"{agent}\0{route}\0".encode() + content).hexdigest()[:32]


class ApprovalGate:
    def __init__(
        self,
        store: ApprovalStore,
        decisions: Store,
        config: ApprovalsConfig,
        routes: Mapping[str, RouteConfig],
        agents: Mapping[str, AgentConfig],
        webhook: Webhook,
        clock: Callable[[], float] = time.time,
        sample: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self._decisions = decisions
        self._config = config
        self._routes = routes
        self._agents = agents
        self._webhook = webhook
        self._clock = clock
        self._sample = sample
        self.trust = TrustKeeper(store, agents, self.policy, clock)
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def policy(self, agent: AgentConfig, route: str) -> ApprovalPolicy | None:
        """The agent's own policy for the route (or for every route), else the route's."""
        if route in agent.approval:
            return agent.approval[route]
        if "*" in agent.approval:
            return agent.approval["*"]
        config = self._routes.get(route)
        return None if config is None else config.approval

    async def replay(
        self, agent: AgentConfig, route: str, request: ChatRequest, approval_id: str | None
    ) -> ChatResult | None:
        """A re-sent request's answer from its approval, or None when there is none to give."""
        if approval_id is not None:
            found = await self.store.approval(approval_id)
            if found is None or found.agent != agent.id:
                raise NotFound(f"no approval {approval_id!r} of this agent", code="approval_not_found")
        else:
            policy = self.policy(agent, route)
            if policy is None:
                return None
            since = self._clock() - policy.expire_s
            found = await self.store.latest_approval(agent.id, request_hash(agent.id, route, request), since)
            if found is None:
                return None
        policy = self.policy(agent, found.route)
        hold_s = policy.hold_s if policy is not None else 0.0
        return await self._outcome(await self._wait(found, hold_s), request)

    async def hold(
        self,
        agent: AgentConfig,
        route: str,
        request: ChatRequest,
        answer: Answer,
        body: bytes,
        attempts: list[Attempt],
        headers: dict[str, str],
        host: str | None,
    ) -> ChatResult | None:
        """After a settled answer: None to deliver it as it is, else the answer as approved (or
        an ApprovalError)."""
        policy = self.policy(agent, route)
        if policy is None:
            return None
        condition = first_holding(policy, answer, request, attempts)
        if condition is None:
            return None
        now = self._clock()
        key = condition.key()
        trusted = await self.trust.trusted(agent, key)
        approval = Approval(
            id=secrets.token_hex(16),
            time=now,
            agent=agent.id,
            route=route,
            decision_id=headers["x-tiergate-decision-id"],
            request_hash=request_hash(agent.id, route, request),
            status="approved" if trusted else "pending",
            reason=describe(condition),
            condition=key,
            tier=answer.tier,
            confidence=answer.confidence,
            request=msgspec.json.encode(request).decode(),
            answer=body.decode(),
            expires_at=now + policy.expire_s,
            decided_at=now if trusted else None,
            automatic=trusted,
            review="pending" if trusted and self._sample() < policy.trust.review_sample else None,
            delivered=trusted,
        )
        await self.store.add_approval(approval)
        if trusted:
            return self._deliver(approval, request, body, "approved", trusted=True)
        self._webhook.post(
            ApprovalRequested(
                event="approval.requested",
                id=approval.id,
                agent=agent.id,
                route=route,
                reason=approval.reason,
                tier=approval.tier,
                confidence=approval.confidence,
                expires_at=approval.expires_at,
                link=f"{self._link_base(host)}/admin/approvals/{approval.id}",
            )
        )
        log.info("approval %s asked for %s on %s: %s", approval.id, agent.id, route, approval.reason)
        return await self._outcome(await self._wait(approval, policy.hold_s), request)

    def _link_base(self, host: str | None) -> str:
        if self._config.link_base:
            return self._config.link_base.rstrip("/")
        return f"http://{host or 'localhost'}"

    async def _wait(self, approval: Approval, hold_s: float) -> Approval:
        """The approval once decided, or as it stands after `hold_s`."""
        if approval.status != "pending" or hold_s <= 0:
            return approval
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold_s
        event = asyncio.Event()
        self._waiting.setdefault(approval.id, set()).add(event)
        try:
            while True:
                found = await self.store.approval(approval.id)
                if found is None or found.status != "pending" or loop.time() >= deadline:
                    return found or approval
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(POLL_S, max(0.0, deadline - loop.time())))
        finally:
            waiting = self._waiting.get(approval.id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiting[approval.id]

    async def _outcome(self, approval: Approval, request: ChatRequest) -> ChatResult:
        if approval.status == "pending":
            raise ApprovalPending(
                f"this answer waits for a person's approval ({approval.reason}); send the same request"
                f" again, or with {APPROVAL_HEADER}, to get the decision",
                code="approval_pending",
                approval_id=approval.id,
                retry_after_s=RETRY_AFTER_S,
            )
        await self.store.delivered(approval.id)
        if approval.status == "rejected":
            why = f": {approval.note}" if approval.note else ""
            raise ApprovalRefused(
                f"a reviewer rejected this answer{why}", code="approval_rejected", approval_id=approval.id
            )
        if approval.status == "expired":
            raise ApprovalRefused(
                "nobody approved this answer before its approval expired",
                code="approval_expired",
                approval_id=approval.id,
            )
        body = approval.answer.encode()
        if approval.status == "edited" and approval.edited is not None:
            body = edited_body(body, msgspec.json.decode(approval.edited))
        kind = "edited" if approval.status == "edited" else "approved"
        return self._deliver(approval, request, body, kind, trusted=approval.automatic)

    @staticmethod
    def _deliver(
        approval: Approval, request: ChatRequest, body: bytes, kind: str, trusted: bool
    ) -> ChatResult:
        headers = decision_headers(approval.decision_id, approval.tier, approval.confidence)
        headers.update({"x-tiergate-approval": kind, APPROVAL_HEADER: approval.id})
        if trusted:
            headers["x-tiergate-approval-trusted"] = "true"
        if not request.stream:
            return ChatResult(headers=headers, body=body)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return ChatResult(
            headers={**headers, **STREAM_HEADERS}, stream=_frames(frames_of_body(body, include_usage))
        )

    async def decide(self, approval_id: str, decision: Decision) -> Approval:
        """A reviewer's decision, taken exactly once (409 for a second one)."""
        if decision.decision == "edit" and decision.content is None:
            raise BadRequest("an edit needs the new content", param="content")
        if decision.decision != "edit" and decision.content is not None:
            raise BadRequest("content goes with decision edit only", param="content")
        if isinstance(decision.content, dict) and set(decision.content) - {"content", "tool_calls"}:
            raise BadRequest(
                "edited content is a string, or an object of content and tool_calls", param="content"
            )
        found = await self.store.approval(approval_id)
        if found is None:
            raise NotFound(f"no approval {approval_id!r}", code="approval_not_found")
        status = _STATUS[decision.decision]
        edited = None if decision.content is None else msgspec.json.encode(decision.content).decode()
        now = self._clock()
        if not await self.store.decide(approval_id, status, now, decision.reason, edited):  # type: ignore[arg-type]
            raise ApprovalDecided(approval_id, found.status)
        for event in self._waiting.get(approval_id, ()):
            event.set()
        decided = await self.store.approval(approval_id)
        assert decided is not None
        await self.trust.verdict(decided)
        await self._decisions.put_feedback(_feedback_of(decided, decision, now))
        return decided

    async def expire(self) -> int:
        """Expire pending approvals past their time (counted as rejections); how many."""
        expired = await self.store.expire(self._clock())
        for approval in expired:
            log.warning(
                "approval %s for %s on %s expired undecided", approval.id, approval.agent, approval.route
            )
            await self.trust.verdict(approval)
            for event in self._waiting.get(approval.id, ()):
                event.set()
        return len(expired)

    async def expire_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.expiry_check_s)
            try:
                await self.expire()
            except Exception as exc:  # the store is down: the next round tries again
                log.error("approvals could not be expired: %s", exc)


class ApprovalDecided(GatewayError):
    status = 409
    type = "invalid_request_error"

    def __init__(self, approval_id: str, status: str) -> None:
        super().__init__(f"approval {approval_id} was decided already ({status})", code="approval_decided")


async def _frames(frames: list[bytes]) -> Any:
    for frame in frames:
        yield frame


def edited_body(body: bytes, edit: Any) -> bytes:
    """The proposed answer with the reviewer's edit: new content (a string), or new content
    and/or tool calls (an object)."""
    completion = msgspec.json.decode(body)
    message = completion["choices"][0]["message"]
    if isinstance(edit, str):
        message["content"] = edit
        message.pop("tool_calls", None)
    else:
        if "content" in edit:
            message["content"] = edit["content"]
        if "tool_calls" in edit:
            message["tool_calls"] = edit["tool_calls"]
    return msgspec.json.encode(completion)


def _feedback_of(approval: Approval, decision: Decision, now: float) -> Feedback:
    """A reviewer's decision as feedback on the decision: an edit or a rejection says the answer
    was wrong (an edited label is the right one), an approval that it was right."""
    right = decision.decision == "approve"
    label = decision.content if isinstance(decision.content, str) else None
    return Feedback(
        decision_id=approval.decision_id,
        source="reviewer",
        time=now,
        agent=approval.agent,
        route=approval.route,
        label=label,
        correct=right,
        comment=decision.reason,
        agreed=right,
        tier=approval.tier,
        confidence=approval.confidence,
    )
