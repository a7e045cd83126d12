"""`POST /v1/chat/completions` as a plain ASGI handler: the hot path skips the framework's
routing, request and response layers, reading the body and writing the answer itself. A client
that disconnects cancels its request wherever it waits: before the answer, the upstream call is
abandoned; during a stream, the pump is cancelled, which closes the upstream stream. Either way
the budget is settled with what was generated."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from litestar import asgi
from litestar.types import Receive, Scope, Send

from gateway.cache.flight import DEFAULT_CONTROL, CacheControl
from gateway.config.models import AgentConfig
from gateway.errors import GatewayError, MethodNotAllowed, PayloadTooLarge, Unavailable
from gateway.http.protocol import CANCEL_ON_DISCONNECT, CLIENT_GONE
from gateway.http.wire import decode_chat_request
from gateway.pipeline.admission import requested_lane
from gateway.pipeline.results import ChatResult, Frames
from gateway.runtime.build import Gateway

log = logging.getLogger("tiergate")

_JSON = ((b"content-type", b"application/json"),)
_SSE = ((b"content-type", b"text/event-stream"),)


class ClientGone(Exception):
    """The client disconnected before its answer was ready: there is nobody to answer."""


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(f"request body is {int(value)} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header_list(headers: dict[str, str], base: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return base + [(k.encode(), v.encode()) for k, v in headers.items()]


async def send_json(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    """A whole JSON answer, with its length (no chunked framing for the client to undo)."""
    base = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": _header_list(headers, base)})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, error: GatewayError) -> None:
    await send_json(send, error.status, error.headers(), error.body())


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(scope: Scope, answer: Awaitable[ChatResult]) -> ChatResult:
    """The answer, or ClientGone once the client has left: the request path is cancelled where it
    waits (an upstream call is abandoned) and settles what was spent. The server's connection
    (gateway.http.protocol) cancels the request when its client disconnects before the answer
    starts, if the request asked for it: no task watches each request."""
    scope[CANCEL_ON_DISCONNECT] = True  # type: ignore[literal-required]
    try:
        return await answer
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if scope.get(CLIENT_GONE) and task is not None and task.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        scope[CANCEL_ON_DISCONNECT] = False  # type: ignore[literal-required]


async def _pump(send: Send, frames: Frames) -> None:
    async for chunk in frames:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stream(receive: Receive, send: Send, headers: dict[str, str], frames: Frames) -> None:
    """Pump the frames until they end or the client leaves; the frames are closed however it goes,
    which releases what the request holds even when not one frame was sent."""
    try:
        await send(
            {"type": "http.response.start", "status": 200, "headers": _header_list(headers, list(_SSE))}
        )
        pump = asyncio.ensure_future(_pump(send, frames))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((pump, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watcher):
                if not task.done():
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    finally:
        await frames.aclose()


CHAT_PATH = "/v1/chat/completions"


@asgi(CHAT_PATH, copy_scope=False)
async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    """The route as the framework sees it (documented, and reached by paths that need its
    normalisation); `GatewayApp` sends the exact path to `serve_chat` directly."""
    await serve_chat(scope["litestar_app"].state.holder.current, scope, receive, send)


async def serve_chat(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    gateway.activity.enter()
    try:
        await _serve(gateway, scope, receive, send)
    finally:
        gateway.activity.leave()


async def _serve(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        if scope.get("method") != "POST":
            raise MethodNotAllowed("use POST for /v1/chat/completions")
        headers = {name: value for name, value in scope["headers"]}
        authorization = headers.get(b"authorization")
        agent = gateway.agents.authenticate(authorization.decode("latin-1") if authorization else None)
    except GatewayError as exc:
        await send_error(send, exc)
        return
    slots = gateway.agent_slots[agent.id]
    if not await slots.enter():
        await send_error(
            send,
            Unavailable(
                f"agent {agent.id!r} has {agent.max_concurrency} requests in flight", retry_after_s=1
            ),
        )
        return
    try:
        await _answer(gateway, agent, headers, scope, receive, send)
    finally:
        slots.leave()  # after the whole answer, streams included


async def _answer(
    gateway: Gateway,
    agent: AgentConfig,
    headers: dict[bytes, bytes],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    try:
        cache_control, cache_ttl = headers.get(b"cache-control"), headers.get(b"x-tiergate-cache-ttl")
        conversation = headers.get(agent.loops.conversation_header.lower().encode())
        body = await _read_body(scope, receive, gateway.limits.max_body_bytes)
        request = decode_chat_request(body, gateway.limits)
        control = (
            DEFAULT_CONTROL
            if cache_control is None and cache_ttl is None
            else CacheControl.from_headers(
                cache_control.decode("latin-1") if cache_control else None,
                cache_ttl.decode("latin-1") if cache_ttl else None,
            )
        )
        approval_id, host = headers.get(b"x-tiergate-approval-id"), headers.get(b"host")
        priority = headers.get(b"x-tiergate-priority")
        lane = requested_lane(agent, priority.decode("latin-1") if priority else None)
        result = await _unless_gone(
            scope,
            gateway.chat.complete(
                agent,
                request,
                control,
                conversation.decode("latin-1") if conversation else None,
                approval_id.decode("latin-1") if approval_id else None,
                host.decode("latin-1") if host else None,
                lane,
            ),
        )
    except GatewayError as exc:
        await send_error(send, exc)
        return
    except ClientGone:
        return
    except Exception:
        log.exception("unhandled error in chat completions")
        await send_error(send, GatewayError("internal error; see the gateway's log"))
        return
    if result.stream is not None:
        await _stream(receive, send, result.headers, result.stream)
        return
    await send_json(send, result.status, result.headers, result.body or b"")
