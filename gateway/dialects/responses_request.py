"""A Responses API request (`POST /v1/responses`), decoded and translated into the internal chat
request: `instructions` becomes the system message, input items become messages (function calls
an assistant message's tool calls, their outputs tool messages), function tools and `text.format`
their chat equivalents. Parameters the gateway cannot honour are refused by name, not ignored."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from gateway.errors import BadRequest
from gateway.http.wire import InputLimits, check_chat_request, decode_json
from tiers.types import (
    ChatRequest,
    ContentPart,
    FunctionCall,
    FunctionDef,
    JsonSchemaFormat,
    Message,
    ResponseFormat,
    StreamOptions,
    Tool,
    ToolCall,
)


class InputPart(msgspec.Struct, omit_defaults=True):
    """A part of an input message (output parts come back when a client sends a whole turn back)."""

    type: str
    text: str | None = None
    image_url: str | None = None
    detail: str | None = None
    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None


class InputItem(msgspec.Struct, omit_defaults=True):
    """One input item; a message may leave out its `type`. Items an earlier response returned may
    carry more fields (ids, statuses, annotations); those are not read."""

    type: str = "message"
    role: str | None = None
    content: str | list[InputPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[InputPart] | None = None


class FunctionTool(msgspec.Struct, omit_defaults=True):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    type: Literal["text", "json_schema", "json_object"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    format: TextFormat | None = None
    verbosity: str | None = None


class Reasoning(msgspec.Struct, omit_defaults=True):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class ResponsesRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    reasoning: Reasoning | None = None
    service_tier: str | None = None
    include: list[str] | None = None  # extra output (encrypted reasoning, logprobs): none to add
    truncation: Literal["auto", "disabled"] | None = None
    prompt_cache_key: str | None = None  # a hint to the provider's prompt cache
    max_tool_calls: int | None = None
    top_logprobs: int | None = None
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None


_DECODER = msgspec.json.Decoder(ResponsesRequest)
_UNSUPPORTED = {
    "conversation": "conversations are not supported; use previous_response_id",
    "prompt": "stored prompts are not supported; send the input itself",
    "background": "background responses are not supported",
    "top_logprobs": "top_logprobs is not supported",
}
_PARAMS = {"messages": "input", "max_tokens": "max_output_tokens", "response_format": "text.format"}


def decode_responses_request(body: bytes, limits: InputLimits) -> ResponsesRequest:
    request = decode_json(body, _DECODER, limits.max_body_bytes)
    for name, reason in _UNSUPPORTED.items():
        if getattr(request, name) not in (None, False, 0):
            raise BadRequest(reason, param=name)
    if not request.model:
        raise BadRequest("model must not be empty", param="model")
    return request


def _part(part: InputPart, at: str) -> ContentPart:
    if part.type in ("input_text", "output_text", "text", "refusal"):
        return ContentPart(type="text", text=part.text or "")
    if part.type == "input_image":
        if part.image_url is None:
            raise BadRequest("an input_image needs image_url (file ids are not supported)", param=at)
        url: dict[str, Any] = {"url": part.image_url}
        if part.detail is not None:
            url["detail"] = part.detail
        return ContentPart(type="image_url", image_url=url)
    if part.type == "input_file":
        file = {k: v for k, v in (("file_id", part.file_id), ("file_data", part.file_data)) if v}
        if part.filename:
            file["filename"] = part.filename
        return ContentPart(type="file", file=file)
    raise BadRequest(f"content part type {part.type!r} is not supported", param=f"{at}.type")


def _content(content: str | list[InputPart] | None, at: str) -> str | list[ContentPart]:
    if content is None:
        raise BadRequest("a message needs content", param=f"{at}.content")
    if isinstance(content, str):
        return content
    parts = [_part(part, f"{at}.content[{i}]") for i, part in enumerate(content)]
    if len(parts) == 1 and parts[0].type == "text":
        return parts[0].text or ""
    return parts


def _output_text(output: str | list[InputPart] | None) -> str:
    if isinstance(output, str):
        return output
    return "\n".join(part.text for part in output or () if part.text)


def input_messages(items: str | list[InputItem]) -> list[Message]:
    """The input as chat messages: consecutive function calls join one assistant message."""
    if isinstance(items, str):
        return [Message(role="user", content=items)]
    messages: list[Message] = []
    for i, item in enumerate(items):
        at = f"input[{i}]"
        if item.type == "message":
            if item.role not in ("user", "system", "developer", "assistant"):
                raise BadRequest(
                    "a message's role must be user, system, developer or assistant", param=f"{at}.role"
                )
            messages.append(Message(role=item.role, content=_content(item.content, at)))  # type: ignore[arg-type]
        elif item.type == "function_call":
            if not item.call_id or not item.name:
                raise BadRequest("a function_call item needs call_id and name", param=at)
            call = ToolCall(id=item.call_id, function=FunctionCall(item.name, item.arguments or ""))
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and last.tool_calls is not None:
                last.tool_calls.append(call)
            elif last is not None and last.role == "assistant" and not last.tool_calls:
                messages[-1] = msgspec.structs.replace(last, tool_calls=[call])
            else:
                messages.append(Message(role="assistant", content=None, tool_calls=[call]))
        elif item.type == "function_call_output":
            if not item.call_id:
                raise BadRequest("a function_call_output item needs call_id", param=f"{at}.call_id")
            output = _output_text(item.output)
            messages.append(Message(role="tool", tool_call_id=item.call_id, content=output))
        elif item.type == "reasoning":
            continue  # a reasoning model's own notes: nothing for the next model to read
        else:
            raise BadRequest(f"input item type {item.type!r} is not supported", param=f"{at}.type")
    return messages


def _tools(tools: list[FunctionTool]) -> list[Tool]:
    chat = []
    for i, tool in enumerate(tools):
        if tool.type != "function":
            raise BadRequest(
                f"only function tools are supported, not {tool.type!r}", param=f"tools[{i}].type"
            )
        if not tool.name:
            raise BadRequest("a function tool needs a name", param=f"tools[{i}].name")
        chat.append(
            Tool(
                type="function",
                function=FunctionDef(tool.name, tool.description, tool.parameters, tool.strict),
            )
        )
    return chat


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise BadRequest("tool_choice must be auto, none, required or a function by name", param="tool_choice")


def _response_format(text: TextConfig | None) -> ResponseFormat | None:
    fmt = None if text is None else text.format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    if fmt.schema is None or not fmt.name:
        raise BadRequest("a json_schema format needs name and schema", param="text.format")
    return ResponseFormat(
        type="json_schema",
        json_schema=JsonSchemaFormat(fmt.name, fmt.schema, fmt.description, fmt.strict),
    )


def chat_request(request: ResponsesRequest, turn: list[Message], limits: InputLimits) -> ChatRequest:
    """The internal request: the instructions, then `turn` (the earlier turns of
    `previous_response_id` and this one's input)."""
    messages = [Message(role="system", content=request.instructions)] if request.instructions else []
    messages += turn
    chat = ChatRequest(
        model=request.model,
        messages=messages,
        stream=request.stream,
        stream_options=StreamOptions(include_usage=True) if request.stream else None,
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_output_tokens,
        tools=_tools(request.tools) if request.tools else None,
        tool_choice=_tool_choice(request.tool_choice),
        parallel_tool_calls=request.parallel_tool_calls if request.tools else None,
        response_format=_response_format(request.text),
        metadata=request.metadata,
        user=request.user or request.safety_identifier,
        reasoning_effort=None if request.reasoning is None else request.reasoning.effort,
        service_tier=request.service_tier,
    )
    try:
        check_chat_request(chat, limits)
    except BadRequest as exc:  # named as the client wrote it
        param = exc.param and _PARAMS.get(exc.param.split(".")[0].split("[")[0], exc.param)
        raise BadRequest(exc.message.replace("messages", "input items"), param=param) from None
    return chat
