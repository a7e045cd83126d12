"""`POST /v1/chat/completions`: the gateway's own dialect, whose requests and answers need no
translation."""

from __future__ import annotations

from litestar import asgi
from litestar.types import Receive, Scope, Send

from gateway.config.models import AgentConfig
from gateway.errors import GatewayError
from gateway.http.edge import bearer_key, serve
from gateway.http.wire import decode_chat_request
from gateway.pipeline.results import ChatResult, Frames
from gateway.runtime.build import Gateway
from tiers.types import ChatRequest

CHAT_PATH = "/v1/chat/completions"


class _ChatExchange:
    __slots__ = ("request",)

    def __init__(self, request: ChatRequest) -> None:
        self.request = request

    async def body(self, result: ChatResult) -> bytes:
        return result.body or b""

    def frames(self, result: ChatResult) -> Frames:
        assert result.stream is not None
        return result.stream


class ChatDialect:
    name = "chat completions"

    agent_key = staticmethod(bearer_key)

    @staticmethod
    async def exchange(gateway: Gateway, agent: AgentConfig, body: bytes) -> _ChatExchange:
        return _ChatExchange(decode_chat_request(body, gateway.limits))

    @staticmethod
    def error(error: GatewayError) -> tuple[int, dict[str, str], bytes]:
        return error.status, error.headers(), error.body()


CHAT = ChatDialect()


@asgi(CHAT_PATH, copy_scope=False)
async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    """The route as the framework sees it (documented, and reached by paths that need its
    normalisation); `GatewayApp` sends the exact path to `serve` directly."""
    await serve(CHAT, scope["litestar_app"].state.holder.current, scope, receive, send)


async def serve_chat(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    await serve(CHAT, gateway, scope, receive, send)
