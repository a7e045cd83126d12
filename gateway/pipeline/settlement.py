"""What a request must release, owned by one object and released exactly once.

Every request that got past its budget holds a `Settlement`: its reservation, its place in a
cache flight, and its draft decision record. `finish(ending)` settles the budget with what was
spent, lands the flight (storing the answer when it may be reused) and writes the record, once,
whichever way the request ends: a whole answer, a stream however it stops, or a failure. A
request refused before anything was held gets only its record (`Records.refused`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.cache.backends import CachedAnswer
from gateway.cache.flight import CacheControl, Flight
from gateway.config.models import AgentConfig
from gateway.errors import GatewayError
from gateway.observe.records import DecisionRecord, Recorder
from gateway.pipeline.budget import BudgetStep
from gateway.pipeline.plan import Plan
from gateway.pipeline.results import decision_headers
from gateway.pipeline.routes import ShadowDecision
from routing.ladder import Attempt, LadderResult
from tiers.lanes import Lane
from tiers.types import Answer, ChatRequest, Usage

log = logging.getLogger("tiergate")

LAST_MESSAGE_CHARS = 2000  # of the last user message kept in a record
NO_USAGE = Usage()


class Draft(msgspec.Struct, frozen=True):
    """Who asked what, and when: what every decision record starts from."""

    id: str
    agent: AgentConfig
    request: ChatRequest
    started: float  # perf_counter
    time: float  # wall clock
    lane: Lane = "normal"
    deferred: bool = False  # a Batch API line (an upstream's own Batch API may take it)


class Ending(msgspec.Struct, frozen=True):
    """How a request ended, as its settlement needs to know it."""

    status: int
    answer: Answer | None = None  # charged at its upstream's price
    usage: Usage | None = None  # the answer's; None: it cost no tokens
    cache_entry: CachedAnswer | None = None  # stored, when the request leads its cache flight
    usage_counted: bool = False  # the gateway counted the usage (the upstream reported none)
    validation: str | None = None
    error: str | None = None
    error_code: str | None = None

    @classmethod
    def failed(cls, exc: BaseException) -> Ending:
        if isinstance(exc, GatewayError):
            return cls(status=exc.status, error=exc.message, error_code=exc.code)
        return cls(status=499 if _is_cancel(exc) else 500, error=_describe(exc))


def _is_cancel(exc: BaseException) -> bool:
    return not isinstance(exc, Exception)  # CancelledError, GeneratorExit: the client went away


def _describe(exc: BaseException) -> str:
    return "client disconnected" if _is_cancel(exc) else f"internal error ({type(exc).__name__})"


LABEL_CHARS = 200
LABEL_TIERS = frozenset({"rules", "classifier"})


def _label(answer: Answer | None) -> str | None:
    """The label a rule or the classifier answered with (an LLM's answer is not a label)."""
    if answer is None or answer.tier not in LABEL_TIERS or answer.content is None:
        return None
    return answer.content[:LABEL_CHARS]


class Records:
    """Decision records: one per request, whatever its ending."""

    __slots__ = ("_recorder", "_redact")

    def __init__(self, recorder: Recorder, redact: bool) -> None:
        self._recorder = recorder
        self._redact = redact

    def refused(self, draft: Draft, route: str, error: BaseException) -> None:
        """A request refused (or failed, or abandoned) before anything was held for it."""
        ending = Ending.failed(error)
        self.write(draft, route, ending.status, error=ending.error, error_code=ending.error_code)

    def write(
        self,
        draft: Draft,
        route: str,
        status: int,
        *,
        latency_ms: dict[str, float] | None = None,
        **fields: Any,
    ) -> None:
        request = draft.request
        record = DecisionRecord(
            id=draft.id,
            time=draft.time,
            agent=draft.agent.id,
            route=route,
            status=status,
            lane=draft.lane,
            stream=request.stream,
            latency_ms={**(latency_ms or {}), "total": (time.perf_counter() - draft.started) * 1000},
            last_user_message=None if self._redact else request.last_user_text()[:LAST_MESSAGE_CHARS],
            **fields,
        )
        self._recorder.write(record)


class Settlement:
    __slots__ = (
        "_attempts",
        "_budget",
        "_control",
        "_flight",
        "_ladder_ms",
        "_records",
        "_rejected",
        "_spent_tokens",
        "cache",
        "draft",
        "finished",
        "plan",
        "shadow",
        "slot_wait_ms",
        "stores",
    )

    def __init__(
        self, draft: Draft, plan: Plan, control: CacheControl, budget: BudgetStep, records: Records
    ) -> None:
        self.draft = draft
        self.plan = plan
        self._control = control
        self._budget = budget
        self._records = records
        self._flight: Flight | None = None
        self.cache = "bypass"  # "hit" | "miss" | "bypass", as the headers and the record say
        self.slot_wait_ms = 0.0  # waiting for upstreams' places
        self.stores = False
        self._attempts: Sequence[Attempt] = ()
        self._rejected: Sequence[Answer] = ()  # answers that failed review: their tokens were spent
        self._ladder_ms: float | None = None
        self._spent_tokens: int | None = None
        self.shadow: ShadowDecision | None = None
        self.finished = False

    def joined(self, flight: Flight | None, cache: str) -> None:
        """The request's place in its cache key's flight, landed when the request finishes; its
        answer is stored (`stores`) when it leads the flight."""
        self._flight, self.cache = flight, cache
        self.stores = flight is not None and flight.leader

    @property
    def attempts(self) -> Sequence[Attempt]:
        """The tiers the ladder tried, as the record will show them."""
        return self._attempts

    def tried(self, result: LadderResult, ms: float) -> None:
        """The ladder's walk: its attempts are recorded, its rejected answers charged."""
        self._attempts, self._rejected, self._ladder_ms = result.attempts, result.rejected, ms

    async def finish(self, ending: Ending) -> None:
        """Settle the budget, land the cache flight, write the record: once, whatever happens in
        between (each step runs even when the one before it fails)."""
        if self.finished:  # a second ending would charge twice
            log.error("request %s finished twice; the second ending is ignored", self.draft.id)
            return
        self.finished = True
        if ending.usage is None and not self._rejected:  # nothing generated, nothing to charge
            usage, micro_usd = NO_USAGE, 0
        else:
            usage, micro_usd = self._budget.cost(ending.usage or NO_USAGE, ending.answer, self._rejected)
        self._spent_tokens = usage.total_tokens
        reservation = self.plan.grant.reservation
        if ending.usage is not None and ending.answer is not None and ending.answer.upstream is not None:
            cap = reservation.completion_tokens if reservation is not None else 0
            self._budget.answered(self.plan.route.name, ending.usage.completion_tokens, cap)
        try:
            if self.plan.grant.reservation is not None:
                await self._budget.settle(self.plan.grant.reservation, usage.total_tokens, micro_usd)
        finally:
            try:
                if self._flight is not None:
                    await self._flight.land(ending.cache_entry, self._control.ttl_s, self._control.write)
            finally:
                self._record(ending, usage, micro_usd / 1_000_000)

    def _record(self, ending: Ending, usage: Usage, cost_usd: float) -> None:
        answer = ending.answer
        latency = {"budget": self.plan.grant.ms} if self.plan.grant.ms else {}
        if self._ladder_ms is not None:
            latency["ladder"] = self._ladder_ms
        waited = self.plan.grant.waited_ms + self.slot_wait_ms
        if waited:
            latency["waited"] = waited  # for budget headroom and upstream places (within the above)
        self._records.write(
            self.draft,
            self.plan.route.name,
            ending.status,
            latency_ms=latency,
            cache=self.cache,
            complexity=self.plan.complexity,
            tier=None if answer is None else answer.tier,
            label=_label(answer),
            upstream=None if answer is None else answer.upstream,
            confidence=None if answer is None else answer.confidence,
            attempts=self._attempts,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            usage_counted=ending.usage_counted,
            cost_usd=cost_usd,
            baseline_usd=self._baseline_usd(usage, answer),
            validation=ending.validation,
            error=ending.error,
            error_code=ending.error_code,
            shadow=self.shadow,
        )

    def _baseline_usd(self, usage: Usage, answer: Answer | None) -> float:
        """What the request would have cost at its route's dearest LLM, for the console's savings:
        an LLM answer's own tokens; for an answer that cost none, the prompt estimated at four
        characters a token and the route's typical completion."""
        route = self.plan.route
        if not route.input_micro_usd and not route.output_micro_usd:
            return 0.0
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        if answer is None or answer.upstream is None:
            prompt = prompt or sum(len(m.text()) for m in self.draft.request.messages) // 4
            completion = completion or self._budget.typical_completion(route.name)
        return (prompt * route.input_micro_usd + completion * route.output_micro_usd) / 1_000_000

    def headers(self, answer: Answer) -> dict[str, str]:
        """The decision's response headers."""
        headers = decision_headers(self.draft.id, answer.tier, answer.confidence)
        headers["x-tiergate-cache"] = self.cache
        reservation = self.plan.grant.reservation
        if reservation is not None and reservation.remaining_tokens is not None:
            remaining = reservation.remaining_tokens  # held tokens count until the request finishes
            if self._spent_tokens is not None:  # then only what it spent
                remaining += reservation.tokens - self._spent_tokens
            headers["x-tiergate-budget-remaining-tokens"] = str(max(0, remaining))
        if self.plan.grant.downgraded is not None:
            headers["x-tiergate-downgraded"] = self.plan.grant.downgraded
        return headers
