"""Answers the gateway writes itself (rules, classifier, cache replays), in OpenAI's wire shapes."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tiers.llm.sse import DONE, frame
from tiers.types import Usage


class _Message(msgspec.Struct):
    role: str
    content: str | None
    refusal: None = None


class _Choice(msgspec.Struct):
    index: int
    message: _Message
    finish_reason: str
    logprobs: None = None


class _Completion(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[_Choice]
    usage: Usage
    system_fingerprint: str = "tiergate"


class _Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _ChunkChoice(msgspec.Struct):
    index: int
    delta: _Delta
    finish_reason: str | None
    logprobs: None = None


class _Chunk(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[_ChunkChoice]
    usage: Usage | None = None


def completion_body(ident: str, content: str, model: str, usage: Usage) -> bytes:
    return msgspec.json.encode(
        _Completion(
            id=ident,
            object="chat.completion",
            created=int(time.time()),
            model=model,
            choices=[
                _Choice(index=0, message=_Message(role="assistant", content=content), finish_reason="stop")
            ],
            usage=usage,
        )
    )


def completion_frames(
    ident: str,
    content: str,
    model: str,
    usage: Usage,
    include_usage: bool,
    tool_calls: list[dict[str, Any]] | None = None,
) -> list[bytes]:
    """A complete answer as the SSE events a streaming client expects, ending in [DONE]."""
    created = int(time.time())

    def chunk(delta: _Delta, finish: str | None) -> bytes:
        return frame(
            msgspec.json.encode(
                _Chunk(ident, "chat.completion.chunk", created, model, [_ChunkChoice(0, delta, finish)])
            )
        )

    frames = [chunk(_Delta(role="assistant", content=""), None)]
    if content:
        frames.append(chunk(_Delta(content=content), None))
    if tool_calls:
        calls = [{"index": i, **call} for i, call in enumerate(tool_calls)]
        frames.append(chunk(_Delta(tool_calls=calls), None))
    frames.append(chunk(_Delta(), "tool_calls" if tool_calls else "stop"))
    if include_usage:
        frames.append(
            frame(msgspec.json.encode(_Chunk(ident, "chat.completion.chunk", created, model, [], usage)))
        )
    frames.append(DONE)
    return frames


def frames_of_body(body: bytes, include_usage: bool) -> list[bytes]:
    """A whole chat.completion body as the frames of a stream (an answer held, then delivered)."""
    completion: dict[str, Any] = msgspec.json.decode(body)
    message = completion["choices"][0]["message"]
    usage = (
        msgspec.convert(completion.get("usage") or {}, Usage) if completion.get("usage") else Usage.of(0, 0)
    )
    return completion_frames(
        completion.get("id", "chatcmpl-held"),
        message.get("content") or "",
        completion.get("model", ""),
        usage,
        include_usage,
        message.get("tool_calls") or None,
    )


def with_usage(body: bytes, usage: Usage) -> bytes:
    """An upstream body that lacked `usage`, with the gateway's count added."""
    decoded: dict[str, Any] = msgspec.json.decode(body)
    decoded["usage"] = msgspec.to_builtins(usage)
    return msgspec.json.encode(decoded)
