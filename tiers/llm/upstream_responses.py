"""An upstream that speaks OpenAI's Responses API (`api: responses`): the chat request as a
Responses request, and its response (whole, or its events) as a chat completion (or chunks)."""

from __future__ import annotations

from typing import Any

import msgspec

from tiers.llm.upstream_apis import (
    DONE_PAYLOAD,
    StreamReader,
    bearer,
    chat_chunk,
    chat_completion,
    error_payload,
    tool_call,
)
from tiers.types import ChatRequest, ContentPart, Message, Usage


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
    calls = [tool_call(i.call_id, i.name, i.arguments) for i in response.output if i.type == "function_call"]
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
        return bearer(api_key)

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
        return chat_completion(text, calls, finish, usage, response.model)

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
        chunks = [] if self._started else [chat_chunk({"role": "assistant", "content": ""})]
        self._started = True
        if event.type == "response.output_text.delta":
            chunks.append(chat_chunk({"content": event.delta}))
        elif (
            event.type == "response.output_item.added"
            and event.item is not None
            and event.item.type == "function_call"
        ):
            index = self._calls[event.item.id] = len(self._calls)
            opening = {"index": index, **tool_call(event.item.call_id, event.item.name, "")}
            chunks.append(chat_chunk({"tool_calls": [opening]}))
        elif event.type == "response.function_call_arguments.delta" and event.item_id in self._calls:
            arguments = {"index": self._calls[event.item_id], "function": {"arguments": event.delta}}
            chunks.append(chat_chunk({"tool_calls": [arguments]}))
        elif event.type in ("response.completed", "response.incomplete") and event.response is not None:
            _, _, finish, usage = _from_response(event.response)
            finish = "tool_calls" if self._calls and finish == "stop" else finish
            chunks += [chat_chunk({}, finish), chat_chunk(None, usage=usage), DONE_PAYLOAD]
        elif event.type in ("error", "response.failed"):
            failed = event.message or "the upstream's response failed"
            chunks.append(error_payload(failed))
        return chunks
