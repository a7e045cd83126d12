"""The APIs an upstream may speak (`api` in its config): Chat Completions (the default), OpenAI's
Responses API, or Anthropic's Messages API. The gateway works in chat requests and answers
throughout; an upstream of another API gets each request in its own shape, and its answers (whole,
or stream events) come back as chat completions and chunks, so the rest of the LLM tier (usage,
caps, relaying, validation) is the same for all. This module holds what they share and Chat
Completions itself; upstream_responses.py and upstream_anthropic.py the other two."""

from __future__ import annotations

from typing import Any, Literal, Protocol

import msgspec

from tiers.types import ChatRequest, Usage

Api = Literal["chat", "responses", "anthropic"]
DONE_PAYLOAD = b"[DONE]"


class StreamReader(Protocol):
    def read(self, payload: bytes) -> list[bytes]:
        """One upstream event's data as the chat chunk payloads it amounts to (maybe none), and
        `[DONE]` once the upstream's stream is complete."""
        ...


class UpstreamApi(Protocol):
    path: str

    def headers(self, api_key: str | None) -> dict[str, str]: ...

    def request(self, request: ChatRequest) -> bytes:
        """The chat request (model and stream already set) in this API's shape."""
        ...

    def answer(self, body: bytes) -> bytes:
        """A whole answer as a chat.completion body."""
        ...

    def stream_reader(self) -> StreamReader: ...


def bearer(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def chat_chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: Usage | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    payload: dict[str, Any] = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "choices": choices,
    }
    if usage is not None:
        payload["usage"] = msgspec.to_builtins(usage)
    return msgspec.json.encode(payload)


def chat_completion(text: str, calls: list[dict[str, Any]], finish: str, usage: Usage, model: str) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return msgspec.json.encode(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": msgspec.to_builtins(usage),
        }
    )


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def error_payload(message: str) -> bytes:
    return msgspec.json.encode({"error": {"message": message, "type": "api_error"}})


class ChatApi:
    path = "/chat/completions"

    @staticmethod
    def headers(api_key: str | None) -> dict[str, str]:
        return bearer(api_key)

    @staticmethod
    def request(request: ChatRequest) -> bytes:
        return msgspec.json.encode(request)

    @staticmethod
    def answer(body: bytes) -> bytes:
        return body

    @staticmethod
    def stream_reader() -> StreamReader:
        return _Unchanged()


class _Unchanged:
    @staticmethod
    def read(payload: bytes) -> list[bytes]:
        return [payload]
