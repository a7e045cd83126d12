"""The respond stage for whole answers (and cache hits): the body in the client's shape, as JSON or
as a stream of frames, after the request's settlement is finished with what the answer cost."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from budgets.tokens import PromptTokens, TokenCounter
from gateway.cache.backends import CachedAnswer
from gateway.http.responses import completion_body, completion_frames, with_usage
from gateway.pipeline.results import STREAM_HEADERS, ChatResult
from gateway.pipeline.settlement import Ending, Settlement
from tiers.types import Answer, Usage


async def _iterate(frames: list[bytes]) -> AsyncGenerator[bytes, None]:
    for item in frames:
        yield item


class Respond:
    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter

    async def whole(self, settlement: Settlement, answer: Answer, prompt: PromptTokens) -> ChatResult:
        """An answer the ladder gave whole. Rules and classifier answers cost no tokens; an LLM's
        usage is what it reported, or the gateway's own count when it reported none."""
        request, completion_id = settlement.draft.request, f"chatcmpl-{settlement.draft.id}"
        counted = answer.usage is None and answer.upstream is not None
        if answer.upstream is None:
            usage = Usage()
            body = completion_body(completion_id, answer.content or "", request.model, usage)
        else:
            usage = answer.usage or Usage.of(prompt(), self._counter.count(answer.content or ""))
            body = with_usage(answer.body or b"", usage) if counted else answer.body or b""
        cacheable = answer.content is not None and not answer.tool_calls
        validated = request.response_format is not None or settlement.plan.route.output_schema is not None
        ending = Ending(
            status=200,
            answer=answer,
            usage=None if answer.upstream is None else usage,
            cache_entry=CachedAnswer(answer.tier, answer.content, body, answer.confidence, usage)
            if cacheable and settlement.stores
            else None,
            usage_counted=counted,
            validation="passed" if validated else None,
        )
        await settlement.finish(ending)
        return _result(settlement, answer, body, usage)

    async def replay(self, settlement: Settlement, cached: CachedAnswer) -> ChatResult:
        """A cache hit: the stored answer, as a body or as a stream; it costs the agent no tokens."""
        request = settlement.draft.request
        answer = Answer(tier=cached.tier, confidence=cached.confidence, content=cached.content)
        body = cached.body or completion_body(
            f"chatcmpl-{settlement.draft.id}", cached.content or "", request.model, cached.usage
        )
        await settlement.finish(Ending(status=200, answer=answer))  # no upstream: nothing is charged
        return _result(settlement, answer, body, cached.usage)


def _result(settlement: Settlement, answer: Answer, body: bytes, usage: Usage) -> ChatResult:
    """A finished request's answer: its body, or its frames when the client asked for a stream."""
    headers = settlement.headers(answer)
    request = settlement.draft.request
    if not request.stream:
        return ChatResult(headers=headers, body=body)
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    frames = completion_frames(
        f"chatcmpl-{settlement.draft.id}", answer.content or "", request.model, usage, include_usage
    )
    return ChatResult(headers={**headers, **STREAM_HEADERS}, stream=_iterate(frames))
