"""An upstream that speaks Anthropic's Messages API (`api: anthropic`): the chat request as a
Messages request (the key in `x-api-key`), and its message (whole, or its events) as a chat
completion (or chunks)."""

from __future__ import annotations

from typing import Any

import msgspec

from tiers.llm.upstream_apis import (
    DONE_PAYLOAD,
    StreamReader,
    chat_chunk,
    chat_completion,
    error_payload,
    tool_call,
)
from tiers.types import ChatRequest, Message, Usage

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_ANTHROPIC_MAX_TOKENS = 4096  # Anthropic requires a cap; used when the request names none


def _anthropic_content(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.content
    if isinstance(content, str) and content:
        blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for part in content:
            url = str((part.image_url or {}).get("url", ""))
            if part.type == "image_url" and url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                blocks.append(
                    {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
                )
            elif part.type == "image_url":
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
            elif part.text:
                blocks.append({"type": "text", "text": part.text})
    for call in message.tool_calls or ():
        try:
            arguments = msgspec.json.decode(call.function.arguments or "{}")
        except msgspec.DecodeError:
            arguments = {}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments})
    return blocks


def anthropic_messages(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """The system text and Anthropic's messages of a chat conversation: tool results join one user
    turn, and consecutive turns of one role are merged (Anthropic wants them to alternate)."""
    system = "\n\n".join(m.text() for m in messages if m.role in ("system", "developer")) or None
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            continue
        if message.role == "tool":
            role, blocks = (
                "user",
                [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text()}],
            )
        else:
            role, blocks = (
                ("assistant" if message.role == "assistant" else "user"),
                _anthropic_content(message),
            )
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


class _Block(msgspec.Struct):
    type: str = ""
    text: str = ""
    id: str = ""
    name: str = ""
    input: Any = None


class _AnthropicUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int = 0


class _AnthropicMessage(msgspec.Struct):
    model: str = ""
    content: list[_Block] = []
    stop_reason: str | None = None
    usage: _AnthropicUsage | None = None


_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicApi:
    path = "/messages"

    @staticmethod
    def headers(api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    @staticmethod
    def request(request: ChatRequest) -> bytes:
        system, messages = anthropic_messages(request.messages)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "max_tokens": request.completion_cap() or DEFAULT_ANTHROPIC_MAX_TOKENS,
            "stream": request.stream,
        }
        if system is not None:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = min(1.0, request.temperature)  # Anthropic's range is 0 to 1
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop is not None:
            body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
        if request.user is not None:
            body["metadata"] = {"user_id": request.user}
        if request.tools:
            body["tools"] = [
                {
                    "name": t.function.name,
                    "input_schema": t.function.parameters or {"type": "object"},
                    **({"description": t.function.description} if t.function.description else {}),
                }
                for t in request.tools
            ]
        choice = request.tool_choice
        if isinstance(choice, dict):
            body["tool_choice"] = {"type": "tool", "name": choice.get("function", {}).get("name")}
        elif choice is not None:
            body["tool_choice"] = {"type": {"required": "any"}.get(choice, choice)}
        if request.parallel_tool_calls is False and "tool_choice" in body:
            body["tool_choice"]["disable_parallel_tool_use"] = True
        return msgspec.json.encode(body)

    @staticmethod
    def answer(body: bytes) -> bytes:
        message = msgspec.json.decode(body, type=_AnthropicMessage)
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = [
            tool_call(block.id, block.name, msgspec.json.encode(block.input or {}).decode())
            for block in message.content
            if block.type == "tool_use"
        ]
        used = message.usage or _AnthropicUsage()
        finish = _FINISH.get(message.stop_reason or "", "stop")
        return chat_completion(
            text, calls, finish, Usage.of(used.input_tokens or 0, used.output_tokens), message.model
        )

    @staticmethod
    def stream_reader() -> StreamReader:
        return _AnthropicStream()


class _Delta(msgspec.Struct):
    type: str = ""
    text: str = ""
    partial_json: str = ""
    stop_reason: str | None = None


class _AnthropicError(msgspec.Struct):
    message: str = "the upstream's stream failed"


class _AnthropicEvent(msgspec.Struct):
    type: str = ""
    message: _AnthropicMessage | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _AnthropicUsage | None = None
    error: _AnthropicError | None = None


class _AnthropicStream:
    """Anthropic's events as chat chunks: text and tool-input deltas, the finish and usage from
    `message_delta` (the input tokens from `message_start`, unless the delta says), [DONE] at
    `message_stop`."""

    def __init__(self) -> None:
        self._input_tokens = 0
        self._tools = -1  # chat tool index of the open tool_use block
        self._finish = "stop"

    def read(self, payload: bytes) -> list[bytes]:
        event = msgspec.json.decode(payload, type=_AnthropicEvent)
        if event.type == "message_start":
            if event.message is not None and event.message.usage is not None:
                self._input_tokens = event.message.usage.input_tokens or 0
            return [chat_chunk({"role": "assistant", "content": ""})]
        if event.type == "content_block_start" and event.content_block is not None:
            block = event.content_block
            if block.type != "tool_use":
                return []
            self._tools += 1
            return [
                chat_chunk({"tool_calls": [{"index": self._tools, **tool_call(block.id, block.name, "")}]})
            ]
        if event.type == "content_block_delta" and event.delta is not None:
            if event.delta.type == "text_delta":
                return [chat_chunk({"content": event.delta.text})]
            if event.delta.type == "input_json_delta" and event.delta.partial_json:
                arguments = {"index": self._tools, "function": {"arguments": event.delta.partial_json}}
                return [chat_chunk({"tool_calls": [arguments]})]
            return []
        if event.type == "message_delta":
            used = event.usage or _AnthropicUsage()
            if used.input_tokens is not None:
                self._input_tokens = used.input_tokens
            stop = event.delta.stop_reason if event.delta is not None else None
            finish = _FINISH.get(stop or "", "stop")
            return [
                chat_chunk({}, finish),
                chat_chunk(None, usage=Usage.of(self._input_tokens, used.output_tokens)),
            ]
        if event.type == "message_stop":
            return [DONE_PAYLOAD]
        if event.type == "error":
            return [
                error_payload(
                    event.error.message if event.error is not None else "the upstream's stream failed"
                )
            ]
        return []  # ping, content_block_stop
