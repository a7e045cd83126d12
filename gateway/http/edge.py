"""The model APIs' edge as plain ASGI: the hot path skips the framework's routing, request and
response layers, reading the body and writing the answer itself. Each API (Chat Completions,
Responses, Messages) is a `Dialect`: it finds the agent's key, translates the request into the
internal chat request, and the answer (whole or streamed) and errors back into its own shape; the
request path in between is the same for all of them.

A client that disconnects cancels its request wherever it waits: before the answer, the upstream
call is abandoned; during a stream, the pump is cancelled, which closes the upstream stream. Either
way the budget is settled with what was generated."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from litestar.types import Receive, Scope, Send

from gateway.cache.flight import DEFAULT_CONTROL, CacheControl
from gateway.config.models import AgentConfig
from gateway.errors import GatewayError, MethodNotAllowed, PayloadTooLarge, Unavailable
from gateway.http.protocol import CANCEL_ON_DISCONNECT, CLIENT_GONE
from gateway.pipeline.admission import requested_lane
from gateway.pipeline.results import ChatResult, Frames
from gateway.runtime.build import Gateway
from tiers.types import ChatRequest

log = logging.getLogger("tiergate")

T = TypeVar("T")
_JSON = ((b"content-type", b"application/json"),)
_SSE = ((b"content-type", b"text/event-stream"),)


class Exchange(Protocol):
    """One request in an API's terms: the internal request it became, and how its answer goes back."""

    request: ChatRequest

    async def body(self, result: ChatResult) -> bytes:
        """A whole answer (a chat.completion body in `result`) in the API's shape."""
        ...

    def frames(self, result: ChatResult) -> Frames:
        """A streamed answer (chat.completion.chunk frames in `result`) as the API's events."""
        ...


class Dialect(Protocol):
    name: str  # as the errors and logs say it

    def agent_key(self, headers: dict[bytes, bytes]) -> str | None:
        """The credential the agent sent, as `Authorization` would carry it."""
        ...

    async def exchange(self, gateway: Gateway, agent: AgentConfig, body: bytes) -> Exchange:
        """The request decoded and translated; a GatewayError names what is wrong with it."""
        ...

    def error(self, error: GatewayError) -> tuple[int, dict[str, str], bytes]:
        """An error as this API's clients expect it: status, headers, body."""
        ...


class ClientGone(Exception):
    """The client disconnected before its answer was ready: there is nobody to answer."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
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


async def send_error(send: Send, dialect: Dialect, error: GatewayError) -> None:
    await send_json(send, *dialect.error(error))


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_gone(scope: Scope, answer: Awaitable[T]) -> T:
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


class Handler(Protocol):
    """What answers a model API's request once its agent is known and within its concurrency."""

    async def __call__(
        self,
        dialect: Dialect,
        gateway: Gateway,
        agent: AgentConfig,
        headers: dict[bytes, bytes],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None: ...


async def serve(
    dialect: Dialect,
    gateway: Gateway,
    scope: Scope,
    receive: Receive,
    send: Send,
    handler: Handler | None = None,
) -> None:
    """One request of a model API, from its first byte to its last: the agent known and within its
    concurrency, then answered (by the request path, unless another `handler` is given)."""
    gateway.activity.enter()
    try:
        await _serve(dialect, gateway, scope, receive, send, handler or _answer)
    finally:
        gateway.activity.leave()


async def _serve(
    dialect: Dialect, gateway: Gateway, scope: Scope, receive: Receive, send: Send, handler: Handler
) -> None:
    try:
        if scope.get("method") != "POST":
            raise MethodNotAllowed(f"use POST for {scope['path']}")
        headers = {name: value for name, value in scope["headers"]}
        agent = gateway.agents.authenticate(dialect.agent_key(headers))
    except GatewayError as exc:
        await send_error(send, dialect, exc)
        return
    slots = gateway.agent_slots[agent.id]
    if not await slots.enter():
        await send_error(
            send,
            dialect,
            Unavailable(
                f"agent {agent.id!r} has {agent.max_concurrency} requests in flight", retry_after_s=1
            ),
        )
        return
    try:
        await handler(dialect, gateway, agent, headers, scope, receive, send)
    finally:
        slots.leave()  # after the whole answer, streams included


def text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def cache_control(headers: dict[bytes, bytes]) -> CacheControl:
    """What the request asks of the cache (`Cache-Control`, `x-tiergate-cache-ttl`)."""
    control, ttl = headers.get(b"cache-control"), headers.get(b"x-tiergate-cache-ttl")
    if control is None and ttl is None:
        return DEFAULT_CONTROL
    return CacheControl.from_headers(text(control), text(ttl))


async def guarded(dialect: Dialect, send: Send, work: Awaitable[T]) -> T | None:
    """The work's result; or None once its error has been sent in the dialect's shape (or its
    client has gone, leaving nobody to answer)."""
    try:
        return await work
    except GatewayError as exc:
        await send_error(send, dialect, exc)
    except ClientGone:
        pass
    except Exception:
        log.exception("unhandled error in %s", dialect.name)
        await send_error(send, dialect, GatewayError("internal error; see the gateway's log"))
    return None


async def _answer(
    dialect: Dialect,
    gateway: Gateway,
    agent: AgentConfig,
    headers: dict[bytes, bytes],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    answered = await guarded(dialect, send, _complete(dialect, gateway, agent, headers, scope, receive))
    if answered is None:
        return
    exchange, result, body = answered
    if result.stream is not None:
        await _stream(receive, send, result.headers, exchange.frames(result))
        return
    await send_json(send, result.status, result.headers, body)


async def _complete(
    dialect: Dialect,
    gateway: Gateway,
    agent: AgentConfig,
    headers: dict[bytes, bytes],
    scope: Scope,
    receive: Receive,
) -> tuple[Exchange, ChatResult, bytes]:
    """The request through the request path: its exchange, its result, and a whole answer's body
    in the dialect's shape (empty for a stream)."""
    conversation = headers.get(agent.loops.conversation_header.lower().encode())
    body = await read_body(scope, receive, gateway.limits.max_body_bytes)
    exchange = await dialect.exchange(gateway, agent, body)
    control = cache_control(headers)
    lane = requested_lane(agent, text(headers.get(b"x-tiergate-priority")))
    result = await unless_gone(
        scope,
        gateway.chat.complete(
            agent,
            exchange.request,
            control,
            text(conversation),
            text(headers.get(b"x-tiergate-approval-id")),
            text(headers.get(b"host")),
            lane,
        ),
    )
    return exchange, result, b"" if result.stream is not None else await exchange.body(result)


def bearer_key(headers: dict[bytes, bytes]) -> str | None:
    """The agent's key as the OpenAI clients send it: `Authorization: Bearer ...`."""
    return text(headers.get(b"authorization"))
