"""An Anthropic Messages API request (`POST /v1/messages`), decoded and translated into the internal
chat request: `system` becomes the system message, `tool_use` blocks an assistant message's tool
calls, `tool_result` blocks tool messages (ahead of the user's words beside them), tools their
function equivalents. Parameters the gateway cannot honour are refused by name."""

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
    Message,
    StreamOptions,
    Tool,
    ToolCall,
)


class Block(msgspec.Struct, omit_defaults=True):
    """A content block; fields a block type does not use stay unset (cache_control and citations
    are hints for Anthropic's own servers, and are not read)."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None
    source: dict[str, Any] | None = None


class InputMessage(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class AnthropicTool(msgspec.Struct, omit_defaults=True):
    name: str
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None  # "custom", or a server tool Anthropic runs itself


class ToolChoice(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(msgspec.Struct, omit_defaults=True):
    type: str
    budget_tokens: int | None = None


class Metadata(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    user_id: str | None = None


class MessagesRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    model: str
    max_tokens: int
    messages: list[InputMessage]
    system: str | list[Block] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: ToolChoice | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    metadata: Metadata | None = None
    thinking: Thinking | None = None
    service_tier: str | None = None


_DECODER = msgspec.json.Decoder(MessagesRequest)
_PARAMS = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p"}


def decode_messages_request(body: bytes, limits: InputLimits) -> MessagesRequest:
    request = decode_json(body, _DECODER, limits.max_body_bytes)
    if not request.model:
        raise BadRequest("model: must not be empty", param="model")
    if request.top_k is not None:
        raise BadRequest("top_k: is not supported", param="top_k")
    if request.thinking is not None and request.thinking.type != "disabled":
        raise BadRequest("thinking: extended thinking is not supported", param="thinking")
    if request.temperature is not None and not 0 <= request.temperature <= 1:
        raise BadRequest("temperature: must be between 0 and 1", param="temperature")
    return request


def _text(content: str | list[Block] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(block.text for block in content if block.type == "text" and block.text)


def _image(block: Block, at: str) -> ContentPart:
    source = block.source or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise BadRequest(f"{at}.source: only base64 and url images are supported", param=f"{at}.source")
    return ContentPart(type="image_url", image_url={"url": url})


def _user(message: InputMessage, at: str) -> list[Message]:
    """A user turn: its tool results as tool messages, then its own words (if any)."""
    if isinstance(message.content, str):
        return [Message(role="user", content=message.content)]
    results: list[Message] = []
    parts: list[ContentPart] = []
    for i, block in enumerate(message.content):
        where = f"{at}.content.{i}"
        if block.type == "tool_result":
            if not block.tool_use_id:
                raise BadRequest(f"{where}.tool_use_id: Field required", param=f"{where}.tool_use_id")
            text = _text(block.content)
            results.append(
                Message(
                    role="tool",
                    tool_call_id=block.tool_use_id,
                    content=f"Error: {text}" if block.is_error else text,
                )
            )
        elif block.type == "text":
            parts.append(ContentPart(type="text", text=block.text or ""))
        elif block.type == "image":
            parts.append(_image(block, where))
        else:
            raise BadRequest(
                f"{where}.type: block type {block.type!r} is not supported", param=f"{where}.type"
            )
    if parts:
        content: str | list[ContentPart] = (
            (parts[0].text or "") if len(parts) == 1 and parts[0].type == "text" else parts
        )
        results.append(Message(role="user", content=content))
    return results


def _assistant(message: InputMessage, at: str) -> Message:
    if isinstance(message.content, str):
        return Message(role="assistant", content=message.content)
    texts, calls = [], []
    for i, block in enumerate(message.content):
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "tool_use":
            if not block.id or not block.name:
                raise BadRequest(
                    f"{at}.content.{i}: a tool_use block needs id and name", param=f"{at}.content.{i}"
                )
            arguments = msgspec.json.encode(block.input if block.input is not None else {}).decode()
            calls.append(ToolCall(id=block.id, function=FunctionCall(block.name, arguments)))
        elif block.type not in ("thinking", "redacted_thinking"):
            raise BadRequest(
                f"{at}.content.{i}.type: block type {block.type!r} is not supported",
                param=f"{at}.content.{i}.type",
            )
    return Message(role="assistant", content="".join(texts) or None, tool_calls=calls or None)


def _tools(tools: list[AnthropicTool]) -> list[Tool]:
    chat = []
    for i, tool in enumerate(tools):
        if tool.type not in (None, "custom") or tool.input_schema is None:
            raise BadRequest(
                f"tools.{i}: only custom tools with an input_schema are supported", param=f"tools.{i}"
            )
        chat.append(
            Tool(type="function", function=FunctionDef(tool.name, tool.description, tool.input_schema))
        )
    return chat


def _tool_choice(choice: ToolChoice | None) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if choice.type == "tool":
        if not choice.name:
            raise BadRequest("tool_choice.name: Field required", param="tool_choice.name")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def chat_request(request: MessagesRequest, limits: InputLimits) -> ChatRequest:
    messages = [Message(role="system", content=_text(request.system))] if request.system else []
    for i, message in enumerate(request.messages):
        at = f"messages.{i}"
        messages += _user(message, at) if message.role == "user" else [_assistant(message, at)]
    choice = request.tool_choice
    chat = ChatRequest(
        model=request.model,
        messages=messages,
        stream=request.stream,
        stream_options=StreamOptions(include_usage=True) if request.stream else None,
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        stop=request.stop_sequences,
        tools=_tools(request.tools) if request.tools else None,
        tool_choice=_tool_choice(choice),
        parallel_tool_calls=False if choice is not None and choice.disable_parallel_tool_use else None,
        user=None if request.metadata is None else request.metadata.user_id,
        service_tier=request.service_tier,
    )
    try:
        check_chat_request(chat, limits)
    except BadRequest as exc:  # named as the client wrote it
        param = exc.param and _PARAMS.get(exc.param, "messages")
        named = param is None or exc.message.startswith(param)
        raise BadRequest(exc.message if named else f"{param}: {exc.message}", param=param) from None
    return chat
