"""Answers and errors in Anthropic's Messages API shape: a whole `message`, or its event stream
(`message_start`, content blocks and their deltas, `message_delta` with the stop reason and usage,
`message_stop`), written from the request path's chat answers (gateway/dialects/chat_view.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from gateway.dialects import chat_view
from gateway.errors import GatewayError, UpstreamFailed
from gateway.pipeline.results import Frames
from tiers.types import Usage

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class AnthropicUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @classmethod
    def of(cls, usage: Usage) -> AnthropicUsage:
        return cls(usage.prompt_tokens, usage.completion_tokens)


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: Any


class AnthropicMessage(msgspec.Struct):
    id: str
    model: str
    content: list[TextBlock | ToolUseBlock]
    stop_reason: str | None
    usage: AnthropicUsage
    stop_sequence: str | None = None
    type: str = "message"
    role: str = "assistant"


class _ErrorBody(msgspec.Struct):
    type: str
    message: str


class _Error(msgspec.Struct):
    error: _ErrorBody
    type: str = "error"


def error_body(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    return msgspec.json.encode(_Error(_ErrorBody(kind, message)))


def error_response(error: GatewayError) -> tuple[int, dict[str, str], bytes]:
    return error.status, error.headers(), error_body(error.status, error.message)


def _arguments(arguments: str) -> Any:
    try:
        return msgspec.json.decode(arguments or "{}")
    except msgspec.DecodeError:
        raise UpstreamFailed("the upstream's tool call arguments are not JSON") from None


def whole(message_id: str, model: str, completion: chat_view.Completion) -> AnthropicMessage:
    content: list[TextBlock | ToolUseBlock] = []
    if completion.text or completion.refusal or not completion.tool_calls:
        content.append(TextBlock(completion.text or completion.refusal or ""))
    content += [
        ToolUseBlock(call.id, call.name, _arguments(call.arguments)) for call in completion.tool_calls
    ]
    return AnthropicMessage(
        message_id,
        model,
        content,
        STOP_REASONS.get(completion.finish_reason, "end_turn"),
        AnthropicUsage.of(completion.usage),
    )


def _event(kind: str, fields: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode({"type": kind, **fields}) + b"\n\n"


class EventWriter:
    """A chat stream's events as Anthropic's: one content block at a time (the text, then each
    tool call), each opened by its first delta and closed when the next one opens."""

    def __init__(self, message_id: str, model: str) -> None:
        self._id = message_id
        self._model = model
        self._index = -1  # of the open content block
        self._open: int | None = None  # the chat tool index of the open block; -1 for text

    async def write(self, frames: Frames) -> AsyncGenerator[bytes, None]:
        start = AnthropicMessage(self._id, self._model, [], None, AnthropicUsage(0, 0))
        yield _event("message_start", {"message": start})
        yield _event("ping", {})
        usage, finish = Usage(), "stop"
        async for event in chat_view.events(frames):
            if isinstance(event, chat_view.TextDelta):
                for chunk in self._switch(-1, {"type": "text", "text": ""}):
                    yield chunk
                yield self._delta({"type": "text_delta", "text": event.text})
            elif isinstance(event, chat_view.ToolStart):
                block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
                for chunk in self._switch(event.index, block):
                    yield chunk
            elif isinstance(event, chat_view.ToolArguments):
                if self._open != event.index:  # arguments before a name: open an unnamed call
                    block = {"type": "tool_use", "id": f"call_{event.index}", "name": "", "input": {}}
                    for chunk in self._switch(event.index, block):
                        yield chunk
                yield self._delta({"type": "input_json_delta", "partial_json": event.arguments})
            elif isinstance(event, chat_view.Finished):
                finish = event.reason
            elif isinstance(event, chat_view.Used):
                usage = event.usage
            else:  # Failed: Anthropic's error event, which the SDK raises
                yield _event("error", {"error": {"type": "api_error", "message": event.message}})
                return
        for chunk in self._close():
            yield chunk
        delta = {"stop_reason": STOP_REASONS.get(finish, "end_turn"), "stop_sequence": None}
        yield _event("message_delta", {"delta": delta, "usage": AnthropicUsage.of(usage)})
        yield _event("message_stop", {})

    def _switch(self, tool_index: int, block: dict[str, Any]) -> list[bytes]:
        if self._open == tool_index:
            return []
        chunks = self._close()
        self._index += 1
        self._open = tool_index
        chunks.append(_event("content_block_start", {"index": self._index, "content_block": block}))
        return chunks

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"index": self._index, "delta": delta})

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [_event("content_block_stop", {"index": self._index})]
