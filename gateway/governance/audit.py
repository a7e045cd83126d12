"""Audit sampling: a share of the cheap tiers' answers is also asked of the route's reference tier,
in the background (never delaying the answer), and whether the two agree is stored.

The reference is asked to answer with one of the route's labels (its classifier's classes and its
rules' answers), so that its answer and the audited one are comparable. Audits spend the route's
own daily token allowance (`audit.budget`, per worker), never an agent's budget."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

import msgspec

from gateway.config.models import AuditConfig
from gateway.store.protocol import Audit, Store
from tiers.base import Tier, TierRequest
from tiers.types import Answer, ChatRequest, Message

log = logging.getLogger("tiergate")

AUDIT_MAX_TOKENS = 32  # a label is a few tokens
DAY_S = 86400.0


def normal(text: str) -> str:
    return " ".join(text.strip().strip(".\"'`").lower().replace("_", " ").replace("-", " ").split())


def label_of(text: str, labels: Sequence[str]) -> str | None:
    """The label an answer names: the one it is, else the longest it contains; None if none."""
    said = normal(text)
    by_form = {normal(label): label for label in labels}
    if said in by_form:
        return by_form[said]
    named = [form for form in by_form if form and form in said]
    return by_form[max(named, key=len)] if named else None


class Auditor:
    """One route's audits."""

    def __init__(
        self,
        route: str,
        config: AuditConfig,
        reference: Tier,
        audited_tiers: frozenset[str],
        labels: Sequence[str],
        store: Store,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.route = route
        self.config = config
        self._reference = reference
        self._audited = audited_tiers
        self._labels = tuple(labels)
        self._store = store
        self._rng = rng
        self._clock = clock
        self._day = 0
        self.spent_today = 0
        self.skipped_for_budget = 0
        self.failed = 0
        self._pending: set[asyncio.Task[None]] = set()
        instruction = "Answer with exactly one of these labels and nothing else: " + ", ".join(self._labels)
        self._instruction = Message(role="system", content=instruction)

    def offer(self, decision_id: str, request: ChatRequest, answer: Answer) -> None:
        """Called with every whole answer of the route: audits the sampled share of the cheap ones."""
        if answer.tier not in self._audited or self._rng() >= self.config.sample:
            return
        day = int(self._clock() // DAY_S)
        if day != self._day:
            self._day, self.spent_today = day, 0
        if self.spent_today >= self.config.budget:
            self.skipped_for_budget += 1
            return
        task = asyncio.ensure_future(self._audit(decision_id, request, answer))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _audit(self, decision_id: str, request: ChatRequest, answer: Answer) -> None:
        asked = msgspec.structs.replace(
            request,
            messages=[self._instruction, *request.messages],
            stream=False,
            stream_options=None,
            tools=None,
            tool_choice=None,
            response_format=None,
        ).with_completion_cap(AUDIT_MAX_TOKENS)
        try:
            reply = await self._reference.decide(
                TierRequest(chat=asked, agent=f"audit:{self.route}", prompt_tokens=lambda: 0)
            )
            if not isinstance(reply, Answer) or reply.content is None:
                self.failed += 1
                return
            tokens = reply.usage.total_tokens if reply.usage is not None else 0
            self.spent_today += tokens
            reference_label = label_of(reply.content, self._labels)
            label = answer.content if answer.content is not None else ""
            await self._store.add_audit(
                Audit(
                    decision_id=decision_id,
                    time=self._clock(),
                    route=self.route,
                    tier=answer.tier,
                    label=label[:200],
                    confidence=answer.confidence,
                    reference=self._reference.name,
                    reference_label=reference_label,
                    agreed=reference_label is not None and normal(reference_label) == normal(label),
                    tokens=tokens,
                )
            )
        except Exception as exc:  # an audit never fails a request; it is only missing
            self.failed += 1
            log.warning("an audit of route %r failed: %s", self.route, exc)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)


class Audits:
    """Every route's auditor; `offer` is on the request path and costs a dict lookup for routes
    without audits."""

    def __init__(self, auditors: dict[str, Auditor]) -> None:
        self.auditors = auditors

    def offer(self, route: str, decision_id: str, request: ChatRequest, answer: Answer) -> None:
        auditor = self.auditors.get(route)
        if auditor is not None:
            auditor.offer(decision_id, request, answer)

    async def close(self) -> None:
        for auditor in self.auditors.values():
            await auditor.close()
