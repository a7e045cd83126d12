"""The request path of ARCHITECTURE §1 for one chat completion: budget, cache, ladder, settle, record."""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from budgets.ledger import Ledger
from budgets.tokens import PromptTokens, TokenCounter
from gateway.budget_alerts import BudgetAlerts
from gateway.budget_step import AgentBudget, BudgetStep
from gateway.cache import Cache, CachedAnswer, cache_key
from gateway.cache_step import DEFAULT_CONTROL, CacheControl, Flight, ResponseCache
from gateway.config import AgentConfig, CacheConfig
from gateway.errors import BadRequest, Forbidden, GatewayError, error_for_status
from gateway.loops import LoopGuard, LoopLimits
from gateway.metrics import Metrics
from gateway.records import DecisionRecord, Recorder
from gateway.responses import completion_body, completion_frames, with_usage
from gateway.route_table import ResolvedRoute, RouteTable
from gateway.structured import label_as_json, target_schema
from gateway.turn import ChatResult, Turn
from gateway.validation import OutputCheck, SchemaValidators, output_check
from routing.ladder import LadderResult
from tiers.base import TierRequest
from tiers.sse import DONE, error_frame
from tiers.types import Answer, ChatRequest, Escalate, Usage

log = logging.getLogger("tiergate")
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def failure_from(failures: list[Escalate]) -> GatewayError:
    """The most telling error when every tier declined: one status shared by all failures is
    reported as is; a mix becomes 502 with every reason listed."""
    if not failures:
        return error_for_status(502, "no tier could answer this request")
    statuses = {f.status or 502 for f in failures}
    message = "; ".join(f"{f.tier}: {f.reason}" for f in failures)
    retry_after = min((f.retry_after_s for f in failures if f.retry_after_s is not None), default=None)
    status = statuses.pop() if len(statuses) == 1 else 502
    if status == 400:
        return BadRequest(message, code="upstream_rejected")
    return error_for_status(status, message, retry_after)


class _Review:
    """Shapes label answers (rules, classifier) into the JSON asked for, and validates answers."""

    def __init__(self, check: OutputCheck, route_schema: dict[str, Any] | None, request: ChatRequest) -> None:
        self._check = check
        self._route_schema = route_schema
        self._request = request

    def review(self, answer: Answer) -> Answer | str:
        if answer.upstream is None and self._check.wants_json and answer.content is not None:
            schema = target_schema(self._request, self._route_schema)
            answer = msgspec.structs.replace(answer, content=label_as_json(answer.content, schema))
        if not answer.tool_calls:
            error = self._check.content_error(answer.content)
            if error is not None:
                return error
        for name, arguments in answer.tool_calls:
            error = self._check.tool_error(name, arguments)
            if error is not None:
                return error
        return answer


async def _iterate(frames: list[bytes]) -> AsyncIterator[bytes]:
    for item in frames:
        yield item


class ChatService:
    def __init__(
        self,
        *,
        routes: RouteTable,
        ledger: Ledger,
        budgets: dict[str, AgentBudget],
        cache: Cache,
        cache_config: CacheConfig,
        counter: TokenCounter,
        recorder: Recorder,
        redact: bool,
        prices: dict[str, tuple[float, float]],
        metrics: Metrics,
        alerts: BudgetAlerts,
        loop_limits: dict[str, LoopLimits],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.routes = routes
        self._budget = BudgetStep(ledger, budgets, alerts, prices)
        self._responses = ResponseCache(cache, cache_config.ttl_s)
        self._cache_config = cache_config
        self._counter = counter
        self._recorder = recorder
        self._redact = redact
        self._validators = SchemaValidators()
        self._loops = LoopGuard(lambda agent, kind: metrics.loops_stopped.labels(agent, kind).inc())
        self._loop_limits = loop_limits
        self._metrics = metrics
        # Decision ids: a random per-process prefix and a counter, unique across workers and far
        # cheaper than uuid4 on the hot path.
        self._id_prefix = secrets.token_hex(11)
        self._id_counter = itertools.count()
        self._clock = clock

    # -- steps --------------------------------------------------------------------------------------

    def _prompt_tokens(self, request: ChatRequest) -> int:
        tokens = self._counter.count_messages((m.text(), m.name) for m in request.messages)
        if request.tools:
            tokens += self._counter.count(msgspec.json.encode(request.tools).decode())
        if request.response_format is not None and request.response_format.json_schema is not None:
            tokens += self._counter.count(msgspec.json.encode(request.response_format.json_schema).decode())
        return tokens

    def _record(self, turn: Turn, status: int, **fields: Any) -> None:
        record = DecisionRecord(
            id=turn.id,
            time=self._clock(),
            agent=turn.agent.id,
            route=turn.route,
            status=status,
            stream=turn.request.stream,
            cache=turn.cache,
            complexity=turn.complexity,
            latency_ms={**turn.latency_ms, "total": (time.perf_counter() - turn.started) * 1000},
            last_user_message=None if self._redact else turn.request.last_user_text()[:2000],
            **fields,
        )
        self._recorder.write(record)
        self._metrics.observe(record)

    def _record_answer(
        self, turn: Turn, result: LadderResult, usage: Usage, cost: float, **extra: Any
    ) -> None:
        answer = result.answer
        assert answer is not None
        self._record(
            turn,
            200,
            tier=answer.tier,
            upstream=answer.upstream,
            confidence=answer.confidence,
            attempts=result.attempts,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=cost,
            **extra,
        )

    def _headers(self, turn: Turn, answer: Answer) -> dict[str, str]:
        headers = {
            "x-tiergate-decision-id": turn.id,
            "x-tiergate-tier": answer.tier,
            "x-tiergate-confidence": f"{answer.confidence:.4f}",
            "x-tiergate-cache": turn.cache,
        }
        if turn.remaining_tokens is not None:
            headers["x-tiergate-budget-remaining-tokens"] = str(max(0, turn.remaining_tokens))
        if turn.downgraded is not None:
            headers["x-tiergate-downgraded"] = turn.downgraded
        return headers

    # -- the path -----------------------------------------------------------------------------------

    async def complete(
        self,
        agent: AgentConfig,
        request: ChatRequest,
        control: CacheControl = DEFAULT_CONTROL,
        conversation: str | None = None,
    ) -> ChatResult:
        turn = Turn(
            f"{self._id_prefix}{next(self._id_counter):010x}",
            agent,
            request,
            request.model,
            time.perf_counter(),
        )
        try:
            route = self.routes.resolve(agent, request.model)
            self._check_permissions(agent, request)
            self._loops.check(agent.id, self._loop_limits[agent.id], request, conversation)
        except GatewayError as exc:
            self._record(turn, exc.status, error=exc.message)
            raise
        try:
            check = output_check(self._validators, request, route.output_schema)
        except GatewayError as exc:
            self._record(turn, exc.status, error=exc.message)
            raise
        prompt_tokens = PromptTokens(lambda: self._prompt_tokens(request))
        try:
            outgoing, ladder = await self._budget.reserve(turn, route, prompt_tokens)
        except GatewayError as exc:
            self._record(turn, exc.status, error=exc.message)
            raise
        flight: Flight | None = None
        try:
            key = self._cache_key(turn, route, control)
            if key is not None:
                cached, flight = await self._responses.lookup(key, control, self._cache_config.wait_s)
                turn.cache = "miss" if cached is None else "hit"
                if cached is not None:
                    return await self._replay(turn, cached)
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            tier_request = TierRequest(
                chat=outgoing,
                agent=agent.id,
                prompt_tokens=prompt_tokens,
                include_usage=include_usage,
                max_repeated_chunks=agent.loops.max_repeated_chunks,
            )
            skip = None
            if route.complexity is not None and ladder is route.ladder:
                turn.complexity, skip = route.complexity.skip(request, prompt_tokens())
            began = time.perf_counter()
            reviewer = _Review(check, route.output_schema, request) if check is not None else None
            result = await ladder.run(tier_request, skip, reviewer, route.repair)
            turn.latency_ms["ladder"] = (time.perf_counter() - began) * 1000
            if result.answer is None:
                await self._budget.settle(turn, Usage(), None, result.rejected)
                raise self._declined(turn, result)
        except GatewayError as exc:
            await self._abandon(turn, flight)
            self._record(turn, exc.status, error=exc.message)
            raise
        except BaseException:
            await self._abandon(turn, flight)
            raise
        answer = result.answer
        if answer.stream is not None:
            return ChatResult(
                headers={**self._headers(turn, answer), **STREAM_HEADERS},
                stream=self._relay(turn, result, control, flight, check),
            )
        return await self._finish(turn, route, result, prompt_tokens, control, flight)

    async def _abandon(self, turn: Turn, flight: Flight | None) -> None:
        """A request that produced no answer: refund its reservation, free its single flight."""
        await self._budget.settle(turn, Usage(), None)
        if flight is not None:
            await flight.land(None, None, write=False)

    @staticmethod
    def _check_permissions(agent: AgentConfig, request: ChatRequest) -> None:
        if request.logprobs and not agent.allow_logprobs:
            raise Forbidden(f"agent {agent.id!r} may not request logprobs", param="logprobs")
        if request.logit_bias and not agent.allow_logit_bias:
            raise Forbidden(f"agent {agent.id!r} may not set logit_bias", param="logit_bias")
        if agent.tools is not None:
            for i, tool in enumerate(request.tools or ()):
                if tool.function.name not in agent.tools:
                    raise Forbidden(
                        f"agent {agent.id!r} may not use the tool {tool.function.name!r}",
                        param=f"tools[{i}].function.name",
                        code="tool_not_allowed",
                    )

    def _declined(self, turn: Turn, result: LadderResult) -> GatewayError:
        denied = next((f for f in result.failures if f.final), None)
        if denied is not None:
            return Forbidden(denied.reason, code="denied_by_rule")
        if turn.denial is not None:
            return turn.denial
        return failure_from(result.failures)

    def _cache_key(self, turn: Turn, route: ResolvedRoute, control: CacheControl) -> str | None:
        request = turn.request
        if not route.cache.enabled or not (control.read or control.write):
            return None
        if route.cache.only_deterministic and request.temperature != 0:
            return None
        return cache_key(request, self._cache_config.scope, turn.agent.id)

    async def _finish(
        self,
        turn: Turn,
        route: ResolvedRoute,
        result: LadderResult,
        prompt_tokens: PromptTokens,
        control: CacheControl,
        flight: Flight | None,
    ) -> ChatResult:
        answer = result.answer
        assert answer is not None
        counted = answer.usage is None
        if answer.upstream is None:
            usage = Usage()  # rules and classifier answers cost no tokens
            body = completion_body(f"chatcmpl-{turn.id}", answer.content or "", turn.request.model, usage)
        else:
            usage = answer.usage or Usage.of(prompt_tokens(), self._counter.count(answer.content or ""))
            body = answer.body or b""
            if counted:
                body = with_usage(body, usage)
        cost = await self._budget.settle(turn, usage, answer, result.rejected)
        headers = self._headers(turn, answer)
        if flight is not None:
            cacheable = answer.content is not None and not answer.tool_calls
            entry = (
                CachedAnswer(answer.tier, answer.content, body, answer.confidence, usage)
                if cacheable
                else None
            )
            await flight.land(entry, control.ttl_s, control.write)
        self._record_answer(
            turn,
            result,
            usage,
            cost,
            usage_counted=counted and answer.upstream is not None,
            validation=None
            if turn.request.response_format is None and route.output_schema is None
            else "passed",
        )
        if turn.request.stream:
            return self._as_stream(turn, headers, answer.content or "", usage)
        return ChatResult(headers=headers, body=body)

    def _as_stream(self, turn: Turn, headers: dict[str, str], content: str, usage: Usage) -> ChatResult:
        include_usage = bool(turn.request.stream_options and turn.request.stream_options.include_usage)
        frames = completion_frames(f"chatcmpl-{turn.id}", content, turn.request.model, usage, include_usage)
        return ChatResult(headers={**headers, **STREAM_HEADERS}, stream=_iterate(frames))

    async def _replay(self, turn: Turn, cached: CachedAnswer) -> ChatResult:
        """A cache hit: the stored answer, as a body or as a stream; it costs the agent no tokens."""
        await self._budget.settle(turn, Usage(), None)
        answer = Answer(tier=cached.tier, confidence=cached.confidence, content=cached.content)
        headers = self._headers(turn, answer)
        self._record(turn, 200, tier=cached.tier, confidence=cached.confidence)
        if turn.request.stream:
            return self._as_stream(turn, headers, cached.content or "", cached.usage)
        body = cached.body or completion_body(
            f"chatcmpl-{turn.id}", cached.content or "", turn.request.model, cached.usage
        )
        return ChatResult(headers=headers, body=body)

    async def _relay(
        self,
        turn: Turn,
        result: LadderResult,
        control: CacheControl,
        flight: Flight | None,
        check: OutputCheck | None,
    ) -> AsyncIterator[bytes]:
        """Forward the stream; whatever way it ends (done, upstream failure, client gone), settle
        the budget with what was generated, cache a complete answer, and write the record."""
        answer = result.answer
        assert answer is not None and answer.stream is not None
        stream = answer.stream
        invalid: str | None = None
        try:
            async for chunk in stream:
                if chunk == DONE and check is not None:
                    # a structured stream is validated once complete; a failure ends it with an error
                    invalid = check.content_error(stream.generated_text())
                    if invalid is not None:
                        yield error_frame(
                            f"the answer failed validation: {invalid}", "output_validation_failed"
                        )
                        continue
                yield chunk
        finally:
            await stream.aclose()
            usage = stream.usage()
            cost = await self._budget.settle(turn, usage, answer)
            if flight is not None:
                complete = (
                    stream.completed
                    and stream.error is None
                    and invalid is None
                    and not stream.has_tool_calls()
                )
                entry = CachedAnswer(answer.tier, stream.generated_text(), b"", answer.confidence, usage)
                await flight.land(entry if complete else None, control.ttl_s, control.write)
            self._record_answer(
                turn,
                result,
                usage,
                cost,
                usage_counted=not stream.usage_reported(),
                error=stream.error if stream.completed else (stream.error or "client disconnected"),
                validation=None if check is None else ("passed" if invalid is None else f"failed: {invalid}"),
            )
