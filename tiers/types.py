"""The request and answer types every tier speaks: the OpenAI chat shape, decoded once at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, Protocol

import msgspec

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class FunctionCall(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    arguments: str


class ToolCall(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ContentPart(msgspec.Struct, omit_defaults=True):
    """One part of a multi-part message; only `text` parts are read by the gateway itself."""

    type: str
    text: str | None = None
    image_url: dict[str, Any] | None = None
    input_audio: dict[str, Any] | None = None
    file: dict[str, Any] | None = None
    refusal: str | None = None


class Message(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    function_call: FunctionCall | None = None

    def text(self) -> str:
        """The message's text, parts joined; what rules, classifiers and counters read."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if part.text)


class FunctionDef(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    type: Literal["function"]
    function: FunctionDef


class JsonSchemaFormat(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class ChatRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A chat completion request as OpenAI defines it. Unknown fields are refused, not ignored."""

    model: str
    messages: list[Message]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    seed: int | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    store: bool | None = None

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""

    def completion_cap(self) -> int | None:
        """The most completion tokens the client allows, whichever field it used."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    def with_completion_cap(self, cap: int) -> ChatRequest:
        """The request with every completion cap it gave lowered to `cap` (`max_tokens` when it
        gave none), so no field the upstream reads lets it spend more than was granted."""
        changes: dict[str, int] = {}
        if self.max_completion_tokens is not None and self.max_completion_tokens > cap:
            changes["max_completion_tokens"] = cap
        if self.max_tokens is not None and self.max_tokens > cap:
            changes["max_tokens"] = cap
        if self.max_tokens is None and self.max_completion_tokens is None:
            changes["max_tokens"] = cap
        return msgspec.structs.replace(self, **changes) if changes else self


class EmbeddingsRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An embeddings request as OpenAI defines it: texts, or texts already turned into token ids."""

    model: str
    input: str | list[Any]  # str, list[str], list[int] or list[list[int]] (the edge checks which)
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    user: str | None = None

    def texts(self) -> list[str] | None:
        """The input's texts; None when it is given as token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, str) for item in self.input):
            return self.input  # type: ignore[return-value]
        return None


class Usage(msgspec.Struct, omit_defaults=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


class AnswerStream(Protocol):
    """SSE frames for the client, each a complete `data: ...\\n\\n` event, ending in `[DONE]`
    or an error event. `usage()` is what was generated so far, reported or counted."""

    completed: bool
    error: str | None
    on_close: Callable[[], None] | None  # called once when the stream is closed, however it ends

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def usage(self) -> Usage: ...

    def generated_text(self) -> str: ...

    def usage_reported(self) -> bool: ...

    def has_tool_calls(self) -> bool: ...

    async def aclose(self) -> None: ...


class Answer(msgspec.Struct, kw_only=True):
    """A tier's answer. Exactly one of `body` (a complete OpenAI response, encoded) or
    `stream` (SSE events, each a complete `data: ...\\n\\n` frame) is set."""

    tier: str
    confidence: float = 1.0
    content: str | None = None
    usage: Usage | None = None
    body: bytes | None = None
    stream: AnswerStream | None = None
    upstream: str | None = None
    tool_calls: tuple[tuple[str, str], ...] = ()  # (name, arguments) of each tool the answer calls
    batched: bool = False  # answered through the upstream's own Batch API (at its batch price)


class Escalate(msgspec.Struct, kw_only=True):
    """A tier's refusal to answer, with the reason the next tier is tried. `final` stops the ladder
    (a rule's deny); `skip_to` names the tier to try next (a rule's escalate_to)."""

    tier: str
    reason: str
    final: bool = False
    skip_to: str | None = None
    status: int | None = None
    retry_after_s: float | None = None
    confidence: float | None = None
