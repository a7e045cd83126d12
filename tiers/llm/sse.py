"""Relaying an upstream's server-sent events to the client event by event, as they arrive.

The relay forwards each upstream event's bytes untouched, keeps count of what was generated (so a
budget can be settled even when the stream is cut), drops the usage chunk the gateway asked for on
its own account, and synthesises one when the client wanted usage and the upstream sent none.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from tiers.errors import UpstreamError
from tiers.llm.upstream_apis import StreamReader
from tiers.types import Usage

DONE = b"data: [DONE]\n\n"


class _FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None
    refusal: str | None = None


class _ChoiceDelta(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _ChunkView(msgspec.Struct):
    id: str = ""
    model: str = ""
    created: int = 0
    choices: list[_ChoiceDelta] = []
    usage: Usage | None = None
    error: Any = None


class _UsageChunk(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[Any]
    usage: Usage


class _ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: None
    code: str


class _ErrorEvent(msgspec.Struct):
    error: _ErrorBody


def error_frame(message: str, code: str = "upstream_error") -> bytes:
    """An SSE event in OpenAI's error shape; the official SDK raises it as an APIError."""
    event = _ErrorEvent(_ErrorBody(message=message, type="api_error", param=None, code=code))
    return b"data: " + msgspec.json.encode(event) + b"\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class StreamBroken(Exception):
    """The upstream stream failed; `before_first_event` tells whether the client has seen anything."""


class SSERelay:
    """One upstream stream, relayed. Iterate it once; it closes the upstream response when done."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        *,
        upstream: str,
        include_usage: bool,
        prompt_tokens: Callable[[], int],
        count_tokens: Callable[[str], int],
        deadline: float,
        first_token_deadline: float,
        max_repeats: int = 100,
        max_completion_tokens: int | None = None,
        reader: StreamReader | None = None,
    ) -> None:
        self.upstream = upstream
        self._reader = reader  # an upstream of another API: its events as chat chunks
        self._translated: collections.deque[bytes] = collections.deque()
        self._cap = max_completion_tokens
        self._counted = 0  # tokens of the forwarded pieces, each counted alone (at least the whole's)
        self._max_repeats = max_repeats
        self._last_delta: str | None = None
        self._repeats = 0
        self._response = response
        self._include_usage = include_usage
        self._prompt_tokens = prompt_tokens
        self._count = count_tokens
        self._deadline = deadline
        self._first_deadline = min(first_token_deadline, deadline)
        self._upstream_usage: Usage | None = None
        self._generated: list[str] = []
        self._pending: bytes | None = None
        self._last = _ChunkView()
        self._closed = False
        self._tool_calls = False
        self.on_close: Callable[[], None] | None = None
        self.completed = False
        self.error: str | None = None

    # -- reading the upstream -------------------------------------------------------------------

    async def _next_event(self, deadline: float) -> bytes | None:
        """The next chat chunk's payload, or None at the end of the body."""
        if self._reader is None:
            return await self._read_event(deadline)
        while not self._translated:
            payload = await self._read_event(deadline)
            if payload is None:
                return None
            try:
                self._translated.extend(self._reader.read(payload))
            except (msgspec.DecodeError, msgspec.ValidationError):
                raise StreamBroken(f"upstream {self.upstream!r} sent a malformed stream event") from None
        return self._translated.popleft()

    async def _read_event(self, deadline: float) -> bytes | None:
        """The next event's data payload, or None at the end of the body."""
        data: list[bytes] = []
        loop_deadline = asyncio.get_running_loop().time() + (deadline - time.monotonic())
        async with asyncio.timeout_at(loop_deadline):
            while True:
                line = await self._response.content.readline()
                if not line:
                    return None  # end of body; an event not closed by a blank line is incomplete
                line = line.rstrip(b"\r\n")
                if not line:
                    if data:
                        return b"\n".join(data)
                    continue
                if line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
                # other fields (event:, id:, retry:) and comments carry nothing we relay

    def _inspect(self, payload: bytes) -> bytes | None:
        """Account for one event; returns the frame to forward, or None to drop it."""
        try:
            chunk = msgspec.json.decode(payload, type=_ChunkView)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise StreamBroken(f"upstream {self.upstream!r} sent a malformed stream event") from None
        if chunk.error is not None:
            raise StreamBroken(f"upstream {self.upstream!r} reported an error mid-stream")
        for choice in chunk.choices:
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                self._generated.append(delta.content)
                self._watch_repeats(delta.content)
                if self._cap is not None:
                    self._watch_cap(delta.content)
            if delta.refusal:
                self._generated.append(delta.refusal)
            for call in delta.tool_calls or ():
                self._tool_calls = True
                if call.function is not None:
                    self._generated.append((call.function.name or "") + (call.function.arguments or ""))
        if chunk.id:
            self._last = chunk
        if chunk.usage is not None:
            self._upstream_usage = chunk.usage
            if not chunk.choices and not self._include_usage:
                return None
        return frame(payload)

    def _watch_cap(self, content: str) -> None:
        """An upstream that ignores the completion cap would spend past what was reserved: the
        stream ends once what it generated passes the cap (closing the upstream connection, so
        generation stops). The pieces' counts add up to at least the whole's; the whole is counted
        only once they pass the cap."""
        assert self._cap is not None
        self._counted += self._count(content)
        if self._counted > self._cap:
            self._counted = self._count("".join(self._generated))
            if self._counted > self._cap:
                raise StreamBroken(
                    f"upstream {self.upstream!r} went past the completion cap of {self._cap} tokens: cut off"
                )

    def _watch_repeats(self, content: str) -> None:
        """A model stuck repeating one chunk burns tokens for nothing: cut it off."""
        if content == self._last_delta:
            self._repeats += 1
            if self._repeats >= self._max_repeats:
                raise StreamBroken(
                    f"upstream {self.upstream!r} repeated the same chunk {self._repeats + 1} times: cut off"
                )
        else:
            self._last_delta, self._repeats = content, 0

    async def prime(self) -> None:
        """Read up to the first forwardable event, so failures before it can be retried."""
        try:
            while self._pending is None:
                payload = await self._next_event(self._first_deadline)
                if payload is None or payload == b"[DONE]":
                    raise StreamBroken(f"upstream {self.upstream!r} ended its stream before any event")
                self._pending = self._inspect(payload)
        except TimeoutError:
            raise UpstreamError(
                f"upstream {self.upstream!r} sent no first token in time", retryable=True, timeout=True
            ) from None
        except (StreamBroken, aiohttp.ClientError, HttpProcessingError) as exc:
            message = str(exc) if isinstance(exc, StreamBroken) else self._broken(exc)
            raise UpstreamError(message, status=502, retryable=True) from None

    # -- what the client sees -------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        try:
            if self._pending is not None:
                pending, self._pending = self._pending, None
                yield pending
            while True:
                try:
                    payload = await self._next_event(self._deadline)
                except TimeoutError:
                    raise StreamBroken(f"upstream {self.upstream!r} did not finish in time") from None
                except (aiohttp.ClientError, HttpProcessingError) as exc:
                    raise StreamBroken(self._broken(exc) + " mid-stream") from None
                if payload is None:
                    raise StreamBroken(f"upstream {self.upstream!r} ended its stream without [DONE]")
                if payload == b"[DONE]":
                    break
                forwarded = self._inspect(payload)
                if forwarded is not None:
                    yield forwarded
            self.completed = True
            if self._include_usage and self._upstream_usage is None:
                yield self._usage_frame()
            yield DONE
        except StreamBroken as exc:
            self.error = str(exc)
            yield error_frame(str(exc))
        finally:
            self._close()

    def _broken(self, exc: BaseException) -> str:
        if isinstance(exc, LineTooLong):
            return f"upstream {self.upstream!r} sent a stream line over the size limit"
        return f"upstream {self.upstream!r} broke off ({type(exc).__name__})"

    def _usage_frame(self) -> bytes:
        last = self._last
        chunk = _UsageChunk(
            id=last.id or "chatcmpl-tiergate",
            object="chat.completion.chunk",
            created=last.created or int(time.time()),
            model=last.model,
            choices=[],
            usage=self.usage(),
        )
        return frame(msgspec.json.encode(chunk))

    def usage(self) -> Usage:
        """What the upstream reported, or what the gateway counted of what was generated so far."""
        if self._upstream_usage is not None:
            return self._upstream_usage
        return Usage.of(self._prompt_tokens(), self._count("".join(self._generated)))

    def usage_reported(self) -> bool:
        return self._upstream_usage is not None

    def generated_text(self) -> str:
        return "".join(self._generated)

    def has_tool_calls(self) -> bool:
        return self._tool_calls

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.on_close is not None:
            self.on_close()
        if self.completed:
            self._response.release()
        else:
            # unread bytes remain: drop the connection rather than return a dirty one to the pool
            self._response.close()

    async def aclose(self) -> None:
        self._close()
