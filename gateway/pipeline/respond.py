"""The respond stage for whole answers (and cache hits): what the answer cost, and its body in the
client's shape, as JSON or as a stream of frames, once the request's settlement is finished."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import msgspec

from budgets.tokens import PromptTokens, TokenCounter
from gateway.cache.backends import CachedAnswer
from gateway.http.responses import completion_body, completion_frames, with_usage
from gateway.pipeline.results import STREAM_HEADERS, ChatResult
from gateway.pipeline.settlement import NO_USAGE, Ending, Settlement
from tiers.types import Answer, Usage


async def _iterate(frames: list[bytes]) -> AsyncGenerator[bytes, None]:
    for item in frames:
        yield item


class Whole(msgspec.Struct, frozen=True):
    """A whole answer ready to go: how it ends its request, and what the client gets."""

    answer: Answer
    ending: Ending
    body: bytes
    usage: Usage  # as the client sees it


class Respond:
    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter

    def answered(self, settlement: Settlement, answer: Answer, prompt: PromptTokens) -> Whole:
        """An answer the ladder gave whole. Rules and classifier answers cost no tokens; an LLM's
        usage is what it reported, or the gateway's own count when it reported none."""
        request = settlement.draft.request
        counted = answer.usage is None and answer.upstream is not None
        if answer.upstream is None:
            usage = NO_USAGE
            body = completion_body(
                f"chatcmpl-{settlement.draft.id}", answer.content or "", request.model, usage
            )
        else:
            usage = answer.usage or Usage.of(prompt(), self._counter.count(answer.content or ""))
            body = with_usage(answer.body or b"", usage) if counted else answer.body or b""
        cacheable = answer.content is not None and not answer.tool_calls and settlement.stores
        validated = request.response_format is not None or settlement.plan.route.output_schema is not None
        ending = Ending(
            status=200,
            answer=answer,
            usage=None if answer.upstream is None else usage,
            cache_entry=CachedAnswer(answer.tier, answer.content, body, answer.confidence, usage)
            if cacheable
            else None,
            usage_counted=counted,
            validation="passed" if validated else None,
        )
        return Whole(answer, ending, body, usage)

    @staticmethod
    def replayed(settlement: Settlement, cached: CachedAnswer) -> Whole:
        """A cache hit: the stored answer; it costs the agent no tokens."""
        answer = Answer(tier=cached.tier, confidence=cached.confidence, content=cached.content)
        body = cached.body or completion_body(
            f"chatcmpl-{settlement.draft.id}",
            cached.content or "",
            settlement.draft.request.model,
            cached.usage,
        )
        return Whole(answer, Ending(status=200, answer=answer), body, cached.usage)

    @staticmethod
    def result(settlement: Settlement, whole: Whole) -> ChatResult:
        """A finished request's answer: its body, or its frames when the client asked for a stream."""
        headers = settlement.headers(whole.answer)
        request = settlement.draft.request
        if not request.stream:
            return ChatResult(headers=headers, body=whole.body)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        frames = completion_frames(
            f"chatcmpl-{settlement.draft.id}",
            whole.answer.content or "",
            request.model,
            whole.usage,
            include_usage,
        )
        return ChatResult(headers={**headers, **STREAM_HEADERS}, stream=_iterate(frames))
