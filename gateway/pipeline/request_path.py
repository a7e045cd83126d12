"""The request path of one chat completion (ARCHITECTURE.md §1), as its list of stages:

    admission   the route the agent may call, its permissions, loop detection, output checks
    plan        who may answer: the budget held (or downgraded), the complexity skip
    ----------  from here the request holds a Settlement, finished exactly once
    cache       a stored answer, or a place in the key's single flight
    ladder      the planned tiers, cheapest first, each whole answer reviewed
    respond     a whole answer (or a cache hit) as JSON or frames; or a relayed stream

Each stage is an object with one job; results travel as return values. A request refused before
its plan holds nothing and gets only its decision record. After that its settlement settles the
budget, lands the cache flight and writes the record: for a whole answer here, for a stream in the
relay when the stream ends (however it ends, or if it never starts), and for every other way out
(a failure, no tier answering, the client leaving) in the guard below.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from budgets.tokens import PromptTokens, TokenCounter
from gateway.cache.flight import DEFAULT_CONTROL, CacheControl
from gateway.config.models import AgentConfig
from gateway.errors import GatewayError, clip
from gateway.pipeline.admission import Admission, Admitted
from gateway.pipeline.budget import BudgetStep
from gateway.pipeline.cache_lookup import CacheLookup
from gateway.pipeline.plan import NothingPaused, Paused, Planner
from gateway.pipeline.relay import Relay
from gateway.pipeline.respond import Respond, Whole
from gateway.pipeline.results import STREAM_HEADERS, ChatResult
from gateway.pipeline.routes import RouteTable
from gateway.pipeline.settlement import Draft, Ending, Records, Settlement
from gateway.pipeline.walk import LadderWalk
from routing.ladder import Attempt
from tiers.base import TierRequest
from tiers.lanes import Lane
from tiers.types import Answer, ChatRequest


class Audits(Protocol):
    def offer(self, route: str, decision_id: str, request: ChatRequest, answer: Answer) -> None: ...


class Approvals(Protocol):
    """The approval stage (gateway/approval/gate.py)."""

    def policy(self, agent: AgentConfig, route: str) -> object | None: ...

    async def replay(
        self, agent: AgentConfig, route: str, request: ChatRequest, approval_id: str | None
    ) -> ChatResult | None: ...

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
    ) -> ChatResult | None: ...


class RequestPath:
    def __init__(
        self,
        *,
        admission: Admission,
        budget: BudgetStep,
        cache: CacheLookup,
        counter: TokenCounter,
        records: Records,
        audits: Audits | None = None,
        approvals: Approvals | None = None,
        paused: Paused | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._admission = admission
        self._planner = Planner(budget, paused or NothingPaused())
        self._audits = audits
        self._approvals = approvals
        self._budget = budget
        self._cache = cache
        self._ladder = LadderWalk()
        self._respond = Respond(counter)
        self._counter = counter
        self._records = records
        self._clock = clock
        # Decision ids: a random per-process prefix and a counter, unique across workers and far
        # cheaper than uuid4 on the hot path.
        self._id_prefix = secrets.token_hex(11)
        self._id_counter = itertools.count()

    @property
    def routes(self) -> RouteTable:
        return self._admission.routes

    async def complete(
        self,
        agent: AgentConfig,
        request: ChatRequest,
        control: CacheControl = DEFAULT_CONTROL,
        conversation: str | None = None,
        approval_id: str | None = None,
        host: str | None = None,
        lane: Lane = "normal",
        deferred: bool = False,
    ) -> ChatResult:
        draft = Draft(
            f"{self._id_prefix}{next(self._id_counter):010x}",
            agent,
            request,
            time.perf_counter(),
            self._clock(),
            lane,
            deferred,
        )
        prompt = PromptTokens(lambda: self._prompt_tokens(request))
        if self._approvals is not None:  # a re-sent request that waits for, or got, a decision
            replayed = await self._replay(agent, request, approval_id)
            if replayed is not None:
                return replayed
        try:
            admitted = self._admission.admit(agent, request, conversation)
            plan = await self._planner.plan(agent, admitted.route, request, prompt, lane)
        except BaseException as exc:  # refused: nothing is held yet, so only the record is written
            self._records.refused(draft, clip(request.model), exc)
            raise
        settlement = Settlement(draft, plan, control, self._budget, self._records)
        held = self._approvals is not None and self._approvals.policy(agent, plan.route.name) is not None
        try:
            if plan.route.shadow is not None:  # scored beside the ladder, recorded, never served
                settlement.shadow = plan.route.shadow.score(request.last_user_text())
            key = self._cache.key(settlement, control)
            cached = None if key is None else await self._cache.lookup(settlement, key, control)
            if cached is not None:
                whole = self._respond.replayed(settlement, cached)
            else:
                answer, outgoing = await self._walk(settlement, admitted, prompt, whole_only=held)
                if answer.stream is not None:  # the relay finishes the settlement when the stream ends
                    relay = Relay(settlement, answer, admitted.check)
                    return ChatResult(headers={**settlement.headers(answer), **STREAM_HEADERS}, stream=relay)
                whole = self._respond.answered(settlement, answer, prompt)
                if self._audits is not None:
                    self._audits.offer(plan.route.name, draft.id, outgoing, answer)
            await settlement.finish(whole.ending)  # charged when generated, approved or not
            approved = await self._hold(settlement, whole, host) if held else None
            return approved if approved is not None else self._respond.result(settlement, whole)
        except BaseException as exc:
            if not settlement.finished:  # failed, declined or cancelled before it handed off
                await settlement.finish(Ending.failed(exc))
            raise

    async def _walk(
        self, settlement: Settlement, admitted: Admitted, prompt: PromptTokens, whole_only: bool
    ) -> tuple[Answer, ChatRequest]:
        """The ladder's answer, and the request as it went upstream (asked whole, not streamed,
        when the answer may be held for approval: it is streamed once approved)."""
        draft = settlement.draft
        outgoing = settlement.plan.grant.request
        if whole_only and outgoing.stream:
            outgoing = msgspec.structs.replace(outgoing, stream=False, stream_options=None)
        tier_request = TierRequest(
            chat=outgoing,
            agent=draft.agent.id,
            prompt_tokens=prompt,
            include_usage=bool(outgoing.stream_options and outgoing.stream_options.include_usage),
            max_repeated_chunks=draft.agent.loops.max_repeated_chunks,
            lane=draft.lane,
            deferred=draft.deferred,
        )
        try:
            return await self._ladder.walk(settlement, admitted, tier_request), outgoing
        finally:
            settlement.slot_wait_ms = tier_request.waited_ms

    async def _hold(self, settlement: Settlement, whole: Whole, host: str | None) -> ChatResult | None:
        """A settled answer held for approval, as delivered once decided (None: not held)."""
        assert self._approvals is not None
        draft = settlement.draft
        return await self._approvals.hold(
            draft.agent,
            settlement.plan.route.name,
            draft.request,
            whole.answer,
            whole.body,
            list(settlement.attempts),
            settlement.headers(whole.answer),
            host,
        )

    async def _replay(
        self, agent: AgentConfig, request: ChatRequest, approval_id: str | None
    ) -> ChatResult | None:
        assert self._approvals is not None
        try:
            route = self.routes.resolve(agent, request.model).name
        except GatewayError:
            return None  # admission says what is wrong with the request
        return await self._approvals.replay(agent, route, request, approval_id)

    def _prompt_tokens(self, request: ChatRequest) -> int:
        tokens = self._counter.count_messages((m.text(), m.name) for m in request.messages)
        if request.tools:
            tokens += self._counter.count(msgspec.json.encode(request.tools).decode())
        if request.response_format is not None and request.response_format.json_schema is not None:
            tokens += self._counter.count(msgspec.json.encode(request.response_format.json_schema).decode())
        return tokens
