"""Reading the request path's answers, which are in Chat Completions' shape: a whole
`chat.completion` body, or a stream of `chat.completion.chunk` frames, read as a sequence of
events that every other API's translation writes in its own terms."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.pipeline.results import Frames
from tiers.types import Usage


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _Error(msgspec.Struct):
    message: str = "the stream failed"
    code: str | None = None
    type: str | None = None


class _Completion(msgspec.Struct):
    id: str = ""
    model: str = ""
    created: int = 0
    choices: list[_Choice] = []
    usage: Usage | None = None
    error: _Error | None = None


_DECODER = msgspec.json.Decoder(_Completion)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer: its text, the tools it calls, why it stopped, and what it used."""

    text: str
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: Usage
    refusal: str | None = None


def completion(body: bytes) -> Completion:
    decoded = _DECODER.decode(body)
    choice = decoded.choices[0] if decoded.choices else _Choice()
    message = choice.message or _Message()
    calls = [
        ToolCall(call.id or f"call_{i}", call.function.name or "", call.function.arguments or "")
        for i, call in enumerate(message.tool_calls or ())
        if call.function is not None
    ]
    return Completion(
        message.content or "",
        calls,
        choice.finish_reason or ("tool_calls" if calls else "stop"),
        decoded.usage or Usage(),
        message.refusal,
    )


# -- a stream's events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArguments:
    index: int
    arguments: str


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str


@dataclass(frozen=True, slots=True)
class Used:
    usage: Usage


@dataclass(frozen=True, slots=True)
class Failed:
    message: str
    code: str


Event = TextDelta | ToolStart | ToolArguments | Finished | Used | Failed


def _payload(frame: bytes) -> bytes:
    return b"\n".join(line[5:].lstrip() for line in frame.splitlines() if line.startswith(b"data:"))


async def events(frames: Frames) -> AsyncIterator[Event]:
    """The stream's events, in order; it ends after [DONE] or a `Failed`."""
    async for frame in frames:
        payload = _payload(frame)
        if payload == b"[DONE]":
            return
        chunk: Any = _DECODER.decode(payload)
        if chunk.error is not None:
            yield Failed(chunk.error.message, chunk.error.code or "upstream_error")
            return
        for event in _chunk_events(chunk):
            yield event


def _chunk_events(chunk: _Completion) -> list[Event]:
    found: list[Event] = []
    for choice in chunk.choices:
        delta = choice.delta
        if delta is not None:
            if delta.content:
                found.append(TextDelta(delta.content))
            if delta.refusal:
                found.append(TextDelta(delta.refusal))
            for call in delta.tool_calls or ():
                function = call.function or _Function()
                if call.id is not None or function.name is not None:
                    found.append(ToolStart(call.index, call.id or f"call_{call.index}", function.name or ""))
                if function.arguments:
                    found.append(ToolArguments(call.index, function.arguments))
        if choice.finish_reason is not None:
            found.append(Finished(choice.finish_reason))
    if chunk.usage is not None:
        found.append(Used(chunk.usage))
    return found


class TranslatedFrames:
    """Frames written from another stream's; closing them closes that stream (which settles it)."""

    def __init__(self, inner: Frames, outer: AsyncGenerator[bytes, None]) -> None:
        self._inner = inner
        self._outer = outer

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._outer

    async def aclose(self) -> None:
        try:
            await self._outer.aclose()
        finally:
            await self._inner.aclose()
