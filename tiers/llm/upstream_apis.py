"""The APIs an upstream may speak (`api` in its config): Chat Completions (the default), OpenAI's
Responses API, or Anthropic's Messages API. The gateway works in chat requests and answers
throughout; an upstream of another API gets each request in its own shape, and its answers (whole,
or stream events) come back as chat completions and chunks, so the rest of the LLM tier (usage,
caps, relaying, validation) is the same for all."""

from __future__ import annotations

from typing import Any, Literal, Protocol

import msgspec

from tiers.types import ChatRequest, ContentPart, Message, Usage

Api = Literal["chat", "responses", "anthropic"]
DONE_PAYLOAD = b"[DONE]"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_ANTHROPIC_MAX_TOKENS = 4096  # Anthropic requires a cap; used when the request names none


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


def _bearer(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: Usage | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    payload: dict[str, Any] = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "choices": choices,
    }
    if usage is not None:
        payload["usage"] = msgspec.to_builtins(usage)
    return msgspec.json.encode(payload)


def _completion(text: str, calls: list[dict[str, Any]], finish: str, usage: Usage, model: str) -> bytes:
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


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _error(message: str) -> bytes:
    return msgspec.json.encode({"error": {"message": message, "type": "api_error"}})


class ChatApi:
    path = "/chat/completions"

    @staticmethod
    def headers(api_key: str | None) -> dict[str, str]:
        return _bearer(api_key)

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


# -- OpenAI's Responses API ---------------------------------------------------------------------


def _input_parts(content: str | list[ContentPart] | None, role: str) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    kind = "output_text" if role == "assistant" else "input_text"
    parts: list[dict[str, Any]] = []
    for part in content:
        if part.type == "image_url" and part.image_url is not None:
            parts.append({"type": "input_image", "image_url": part.image_url.get("url"), "detail": "auto"})
        elif part.text is not None:
            parts.append({"type": kind, "text": part.text})
    return parts


def responses_input(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """The instructions (the first system message) and the input items of a chat conversation."""
    instructions = None
    items: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role in ("system", "developer") and i == 0:
            instructions = message.text()
        elif message.role == "tool":
            items.append(
                {"type": "function_call_output", "call_id": message.tool_call_id, "output": message.text()}
            )
        elif message.role == "assistant" and message.tool_calls:
            if message.text():
                items.append({"role": "assistant", "content": message.text()})
            items += [
                {
                    "type": "function_call",
                    "call_id": c.id,
                    "name": c.function.name,
                    "arguments": c.function.arguments,
                }
                for c in message.tool_calls
            ]
        else:
            role = "developer" if message.role == "developer" else message.role
            items.append({"role": role, "content": _input_parts(message.content, message.role)})
    return instructions, items


class _OutputContent(msgspec.Struct):
    type: str = ""
    text: str = ""
    refusal: str = ""


class _OutputItem(msgspec.Struct):
    type: str = ""
    content: list[_OutputContent] = []
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    id: str = ""


class _ResponsesUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0


class _Incomplete(msgspec.Struct):
    reason: str = ""


class _Response(msgspec.Struct):
    model: str = ""
    status: str = "completed"
    output: list[_OutputItem] = []
    usage: _ResponsesUsage | None = None
    incomplete_details: _Incomplete | None = None
    error: Any = None


def _from_response(response: _Response) -> tuple[str, list[dict[str, Any]], str, Usage]:
    text = "".join(
        part.text or part.refusal
        for item in response.output
        if item.type == "message"
        for part in item.content
    )
    calls = [_call(i.call_id, i.name, i.arguments) for i in response.output if i.type == "function_call"]
    if response.status == "incomplete":
        reason = response.incomplete_details.reason if response.incomplete_details else ""
        finish = "content_filter" if reason == "content_filter" else "length"
    else:
        finish = "tool_calls" if calls else "stop"
    used = response.usage or _ResponsesUsage()
    return text, calls, finish, Usage.of(used.input_tokens, used.output_tokens)


class ResponsesApi:
    path = "/responses"

    @staticmethod
    def headers(api_key: str | None) -> dict[str, str]:
        return _bearer(api_key)

    @staticmethod
    def request(request: ChatRequest) -> bytes:
        instructions, items = responses_input(request.messages)
        body: dict[str, Any] = {
            "model": request.model,
            "input": items,
            "store": False,
            "stream": request.stream,
        }
        if instructions is not None:
            body["instructions"] = instructions
        cap = request.completion_cap()
        optional = {
            "max_output_tokens": cap,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "parallel_tool_calls": request.parallel_tool_calls,
            "metadata": request.metadata,
            "user": request.user,
            "service_tier": request.service_tier,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if request.reasoning_effort is not None:
            body["reasoning"] = {"effort": request.reasoning_effort}
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "name": t.function.name,
                    "description": t.function.description,
                    "parameters": t.function.parameters or {"type": "object"},
                    **({"strict": t.function.strict} if t.function.strict is not None else {}),
                }
                for t in request.tools
            ]
        choice = request.tool_choice
        if isinstance(choice, dict):
            body["tool_choice"] = {"type": "function", "name": choice.get("function", {}).get("name")}
        elif choice is not None:
            body["tool_choice"] = choice
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
            schema = fmt.json_schema
            body["text"] = {
                "format": {
                    "type": "json_schema",
                    "name": schema.name,
                    "schema": schema.schema,
                    **({"strict": schema.strict} if schema.strict is not None else {}),
                }
            }
        elif fmt is not None and fmt.type == "json_object":
            body["text"] = {"format": {"type": "json_object"}}
        return msgspec.json.encode(body)

    @staticmethod
    def answer(body: bytes) -> bytes:
        response = msgspec.json.decode(body, type=_Response)
        text, calls, finish, usage = _from_response(response)
        return _completion(text, calls, finish, usage, response.model)

    @staticmethod
    def stream_reader() -> StreamReader:
        return _ResponsesStream()


class _StreamEvent(msgspec.Struct):
    type: str = ""
    delta: str = ""
    item_id: str = ""
    item: _OutputItem | None = None
    response: _Response | None = None
    message: str = ""


class _ResponsesStream:
    """Responses events as chat chunks: text deltas, each function call (numbered as it opens) and
    its argument deltas, then the finish and usage from `response.completed`."""

    def __init__(self) -> None:
        self._calls: dict[str, int] = {}  # function call item id -> chat tool index
        self._started = False

    def read(self, payload: bytes) -> list[bytes]:
        event = msgspec.json.decode(payload, type=_StreamEvent)
        chunks = [] if self._started else [_chunk({"role": "assistant", "content": ""})]
        self._started = True
        if event.type == "response.output_text.delta":
            chunks.append(_chunk({"content": event.delta}))
        elif (
            event.type == "response.output_item.added"
            and event.item is not None
            and event.item.type == "function_call"
        ):
            index = self._calls[event.item.id] = len(self._calls)
            opening = {"index": index, **_call(event.item.call_id, event.item.name, "")}
            chunks.append(_chunk({"tool_calls": [opening]}))
        elif event.type == "response.function_call_arguments.delta" and event.item_id in self._calls:
            arguments = {"index": self._calls[event.item_id], "function": {"arguments": event.delta}}
            chunks.append(_chunk({"tool_calls": [arguments]}))
        elif event.type in ("response.completed", "response.incomplete") and event.response is not None:
            _, _, finish, usage = _from_response(event.response)
            finish = "tool_calls" if self._calls and finish == "stop" else finish
            chunks += [_chunk({}, finish), _chunk(None, usage=usage), DONE_PAYLOAD]
        elif event.type in ("error", "response.failed"):
            failed = event.message or "the upstream's response failed"
            chunks.append(_error(failed))
        return chunks


# -- Anthropic's Messages API -------------------------------------------------------------------


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
            _call(block.id, block.name, msgspec.json.encode(block.input or {}).decode())
            for block in message.content
            if block.type == "tool_use"
        ]
        used = message.usage or _AnthropicUsage()
        finish = _FINISH.get(message.stop_reason or "", "stop")
        return _completion(
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
            return [_chunk({"role": "assistant", "content": ""})]
        if event.type == "content_block_start" and event.content_block is not None:
            block = event.content_block
            if block.type != "tool_use":
                return []
            self._tools += 1
            return [_chunk({"tool_calls": [{"index": self._tools, **_call(block.id, block.name, "")}]})]
        if event.type == "content_block_delta" and event.delta is not None:
            if event.delta.type == "text_delta":
                return [_chunk({"content": event.delta.text})]
            if event.delta.type == "input_json_delta" and event.delta.partial_json:
                arguments = {"index": self._tools, "function": {"arguments": event.delta.partial_json}}
                return [_chunk({"tool_calls": [arguments]})]
            return []
        if event.type == "message_delta":
            used = event.usage or _AnthropicUsage()
            if used.input_tokens is not None:
                self._input_tokens = used.input_tokens
            stop = event.delta.stop_reason if event.delta is not None else None
            finish = _FINISH.get(stop or "", "stop")
            return [_chunk({}, finish), _chunk(None, usage=Usage.of(self._input_tokens, used.output_tokens))]
        if event.type == "message_stop":
            return [DONE_PAYLOAD]
        if event.type == "error":
            return [
                _error(event.error.message if event.error is not None else "the upstream's stream failed")
            ]
        return []  # ping, content_block_stop


def upstream_api(api: Api) -> UpstreamApi:
    if api == "responses":
        return ResponsesApi()
    if api == "anthropic":
        return AnthropicApi()
    return ChatApi()
