"""`POST /v1/embeddings`: passed to the route's embedding upstreams (gateway/pipeline/embeddings.py)
with the agent's budget, the cache and a decision record, as OpenAI's clients expect it."""

from __future__ import annotations

import logging

from litestar import asgi
from litestar.types import Receive, Scope, Send

from gateway.config.models import AgentConfig
from gateway.errors import GatewayError
from gateway.http.chat_completions import CHAT
from gateway.http.edge import (
    ClientGone,
    Dialect,
    cache_control,
    read_body,
    send_error,
    send_json,
    serve,
    unless_gone,
)
from gateway.runtime.build import Gateway

log = logging.getLogger("tiergate")
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
    try:
        body = await read_body(scope, receive, gateway.limits.max_body_bytes)
        request = gateway.embeddings.decode(body)
        result = await unless_gone(scope, gateway.embeddings.embed(agent, request, cache_control(headers)))
    except GatewayError as exc:
        await send_error(send, dialect, exc)
        return
    except ClientGone:
        return
    except Exception:
        log.exception("unhandled error in embeddings")
        await send_error(send, dialect, GatewayError("internal error; see the gateway's log"))
        return
    await send_json(send, 200, result.headers, result.body)


async def serve_embeddings(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    await serve(CHAT, gateway, scope, receive, send, _answer)


@asgi(EMBEDDINGS_PATH, copy_scope=False)
async def create_embeddings(scope: Scope, receive: Receive, send: Send) -> None:
    await serve_embeddings(scope["litestar_app"].state.holder.current, scope, receive, send)
