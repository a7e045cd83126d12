"""`POST /v1/messages`: Anthropic's Messages API, translated at the edge
(gateway/dialects/messages*.py), so a request gets the same tiers, budgets, cache, validation,
approvals and records as a chat completion. The agent's key comes in `x-api-key` (as Anthropic's
SDK sends it) or `Authorization`; errors are in Anthropic's shape."""

from __future__ import annotations

import msgspec
from litestar import asgi
from litestar.types import Receive, Scope, Send

from gateway.config.models import AgentConfig
from gateway.dialects import chat_view
from gateway.dialects.messages import EventWriter, error_response, whole
from gateway.dialects.messages_request import MessagesRequest, chat_request, decode_messages_request
from gateway.errors import GatewayError
from gateway.http.edge import bearer_key, serve
from gateway.pipeline.results import ChatResult, Frames
from gateway.runtime.build import Gateway

MESSAGES_PATH = "/v1/messages"


class _MessagesExchange:
    __slots__ = ("original", "request")

    def __init__(self, original: MessagesRequest, gateway: Gateway) -> None:
        self.original = original
        self.request = chat_request(original, gateway.limits)

    @staticmethod
    def _id(result: ChatResult) -> str:
        return f"msg_{result.headers['x-tiergate-decision-id']}"

    async def body(self, result: ChatResult) -> bytes:
        message = whole(self._id(result), self.original.model, chat_view.completion(result.body or b""))
        return msgspec.json.encode(message)

    def frames(self, result: ChatResult) -> Frames:
        assert result.stream is not None
        events = EventWriter(self._id(result), self.original.model).write(result.stream)
        return chat_view.TranslatedFrames(result.stream, events)


class MessagesDialect:
    name = "messages"

    @staticmethod
    def agent_key(headers: dict[bytes, bytes]) -> str | None:
        key = headers.get(b"x-api-key")
        if key is not None:
            return "Bearer " + key.decode("latin-1")
        return bearer_key(headers)

    @staticmethod
    async def exchange(gateway: Gateway, agent: AgentConfig, body: bytes) -> _MessagesExchange:
        return _MessagesExchange(decode_messages_request(body, gateway.limits), gateway)

    @staticmethod
    def error(error: GatewayError) -> tuple[int, dict[str, str], bytes]:
        return error_response(error)


MESSAGES = MessagesDialect()


@asgi(MESSAGES_PATH, copy_scope=False)
async def create_message(scope: Scope, receive: Receive, send: Send) -> None:
    await serve(MESSAGES, scope["litestar_app"].state.holder.current, scope, receive, send)
