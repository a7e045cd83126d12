"""`POST /v1/embeddings`: passed to the route's embedding upstreams (gateway/pipeline/embeddings.py)
with the agent's budget, the cache and a decision record, as OpenAI's clients expect it."""

from __future__ import annotations

from litestar import asgi
from litestar.types import Receive, Scope, Send

from gateway.config.models import AgentConfig
from gateway.http.chat_completions import CHAT
from gateway.http.edge import Dialect, cache_control, guarded, read_body, send_json, serve, unless_gone
from gateway.pipeline.embeddings import EmbeddingsResult
from gateway.runtime.build import Gateway

EMBEDDINGS_PATH = "/v1/embeddings"


async def _answer(
    dialect: Dialect,
    gateway: Gateway,
    agent: AgentConfig,
    headers: dict[bytes, bytes],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    result = await guarded(dialect, send, _embed(gateway, agent, headers, scope, receive))
    if result is not None:
        await send_json(send, 200, result.headers, result.body)


async def _embed(
    gateway: Gateway, agent: AgentConfig, headers: dict[bytes, bytes], scope: Scope, receive: Receive
) -> EmbeddingsResult:
    body = await read_body(scope, receive, gateway.limits.max_body_bytes)
    request = gateway.embeddings.decode(body)
    return await unless_gone(scope, gateway.embeddings.embed(agent, request, cache_control(headers)))


async def serve_embeddings(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    await serve(CHAT, gateway, scope, receive, send, _answer)


@asgi(EMBEDDINGS_PATH, copy_scope=False)
async def create_embeddings(scope: Scope, receive: Receive, send: Send) -> None:
    await serve_embeddings(scope["litestar_app"].state.holder.current, scope, receive, send)
