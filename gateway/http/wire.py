"""The edge: OpenAI wire JSON in, internal request out, with every problem named by its field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from gateway.errors import BadRequest, PayloadTooLarge
from tiers.types import ChatRequest

T = TypeVar("T")
_DECODER = msgspec.json.Decoder(ChatRequest)
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_FIELD = re.compile(r"(?:unknown|required) field `(?P<name>[^`]+)`")


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_body_bytes: int
    max_messages: int
    max_total_chars: int


def _param(message: str) -> tuple[str, str | None]:
    """Split msgspec's "... - at `$.a[0].b`" into the message and an OpenAI-style param."""
    path = None
    at = _AT.search(message)
    if at is not None:
        path = at.group("path").lstrip(".")
        message = message[: at.start()]
    field = _FIELD.search(message)
    if field is not None:
        path = f"{path}.{field.group('name')}" if path else field.group("name")
    return message, path or None


def decode_json(body: bytes, decoder: msgspec.json.Decoder[T], max_body_bytes: int) -> T:
    """A request body decoded into its type; every problem a 400 (or 413) naming its field."""
    if len(body) > max_body_bytes:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {max_body_bytes}")
    if not body.strip():
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, param = _param(str(exc))
        if message.startswith("Object contains unknown field"):
            message = f"unsupported parameter: {param}"
        raise BadRequest(message, param=param) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None


def decode_chat_request(body: bytes, limits: InputLimits) -> ChatRequest:
    request = decode_json(body, _DECODER, limits.max_body_bytes)
    check_chat_request(request, limits)
    return request


def check_chat_request(request: ChatRequest, limits: InputLimits) -> None:
    """What the gateway asks of every chat request, however it arrived (another API's request is
    checked once translated)."""
    if not request.model:
        raise BadRequest("model must not be empty", param="model")
    if not request.messages:
        raise BadRequest("messages must hold at least one message", param="messages")
    if len(request.messages) > limits.max_messages:
        raise BadRequest(
            f"{len(request.messages)} messages; the limit is {limits.max_messages}", param="messages"
        )
    total = sum(len(m.text()) for m in request.messages)
    if total > limits.max_total_chars:
        raise BadRequest(
            f"messages hold {total} characters; the limit is {limits.max_total_chars}", param="messages"
        )
    if request.n is not None and request.n != 1:
        raise BadRequest("only n=1 is supported", param="n")
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(request, name)
        if value is not None and value < 1:
            raise BadRequest(f"{name} must be at least 1", param=name)
    if request.temperature is not None and not 0 <= request.temperature <= 2:
        raise BadRequest("temperature must be between 0 and 2", param="temperature")
    if request.top_p is not None and not 0 <= request.top_p <= 1:
        raise BadRequest("top_p must be between 0 and 1", param="top_p")
    if request.stream_options is not None and not request.stream:
        raise BadRequest("stream_options is only allowed when stream is true", param="stream_options")
    if request.top_logprobs is not None and not request.logprobs:
        raise BadRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    fmt = request.response_format
    if (
        fmt is not None
        and fmt.type == "json_schema"
        and (fmt.json_schema is None or fmt.json_schema.schema is None)
    ):
        raise BadRequest(
            "response_format json_schema needs json_schema.schema", param="response_format.json_schema"
        )
    for i, message in enumerate(request.messages):
        if message.role == "tool" and not message.tool_call_id:
            raise BadRequest("a tool message needs tool_call_id", param=f"messages[{i}].tool_call_id")
        if message.content is None and message.role not in ("assistant",):
            raise BadRequest(f"a {message.role} message needs content", param=f"messages[{i}].content")
