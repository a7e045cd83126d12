"""The respond stage for streamed answers: the upstream's frames forwarded as they come; however
the stream ends (done, upstream failure, client gone, or never started), the request's settlement
is finished once with what was generated."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from gateway.cache.backends import CachedAnswer
from gateway.pipeline.review import OutputCheck
from gateway.pipeline.settlement import Ending, Settlement
from tiers.llm.sse import DONE, error_frame
from tiers.types import Answer, AnswerStream


class Relay:
    """A stream's frames as the edge pumps them (see `gateway.pipeline.results.Frames`)."""

    def __init__(self, settlement: Settlement, answer: Answer, check: OutputCheck | None) -> None:
        assert answer.stream is not None
        self._settlement = settlement
        self._answer = answer
        self._stream: AnswerStream = answer.stream
        self._check = check
        self._invalid: str | None = None
        self._started = False
        self._frames = self._forward()

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._started = True
        return self._frames

    async def aclose(self) -> None:
        if self._started:
            await self._frames.aclose()  # runs the generator's `finally`, which ends the stream
        else:
            await self._end()  # a generator that never ran has no `finally` to run

    async def _forward(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._stream:
                if chunk == DONE and self._check is not None:
                    # a structured stream is validated once complete; a failure ends it with an error
                    self._invalid = self._check.content_error(self._stream.generated_text())
                    if self._invalid is not None:
                        yield error_frame(
                            f"the answer failed validation: {self._invalid}", "output_validation_failed"
                        )
                        continue
                yield chunk
        finally:
            await self._end()

    async def _end(self) -> None:
        if self._settlement.finished:
            return
        stream, answer, invalid = self._stream, self._answer, self._invalid
        await stream.aclose()
        usage = stream.usage()
        complete = (
            stream.completed and stream.error is None and invalid is None and not stream.has_tool_calls()
        )
        await self._settlement.finish(
            Ending(
                status=200,
                answer=answer,
                usage=usage,
                cache_entry=CachedAnswer(answer.tier, stream.generated_text(), b"", answer.confidence, usage)
                if complete and self._settlement.stores
                else None,
                usage_counted=not stream.usage_reported(),
                error=stream.error if stream.completed else (stream.error or "client disconnected"),
                validation=None
                if self._check is None
                else ("passed" if invalid is None else f"failed: {invalid}"),
            )
        )
