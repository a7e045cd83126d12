"""The simulated upstream's Responses (`/v1/responses`) and Anthropic Messages (`/v1/messages`)
endpoints, for upstreams configured with `api: responses` or `api: anthropic`: each request is
read as a chat request and answered as the chat endpoint would, in the API's own shape, whole or
as its event stream. The shapes are the gateway's own (gateway/dialects), which the official SDKs
accept in the gateway's tests."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from gateway.dialects import chat_view, messages, responses
from gateway.dialects.messages_request import chat_request as messages_chat_request
from gateway.dialects.messages_request import decode_messages_request
from gateway.dialects.responses_request import chat_request, decode_responses_request, input_messages
from gateway.errors import GatewayError
from gateway.http.wire import InputLimits

if TYPE_CHECKING:
    from tiers.llm.simulator import SimulatedUpstream

LIMITS = InputLimits(64 * 1024 * 1024, 100_000, 100_000_000)


async def _frames(frames: list[bytes]) -> AsyncGenerator[bytes, None]:
    for frame in frames:
        yield frame


async def _nothing(_: responses.ResponseObject) -> None:
    return None


async def _send_events(http: web.Request, events: AsyncIterator[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
    await response.prepare(http)
    async for event in events:
        await response.write(event)
    await response.write_eof()
    return response


class OtherApis:
    def __init__(self, upstream: SimulatedUpstream) -> None:
        self._upstream = upstream

    async def responses(self, http: web.Request) -> web.StreamResponse:
        try:
            request = decode_responses_request(await http.read(), LIMITS)
            chat = chat_request(request, input_messages(request.input), LIMITS)
        except GatewayError as exc:
            return web.Response(status=exc.status, body=exc.body(), content_type="application/json")
        reply = await self._upstream.simulate(http, chat)
        if isinstance(reply, web.StreamResponse):
            return reply
        writer = responses.ResponseWriter(request, reply.ident, False)
        if not chat.stream:
            whole = writer.whole(chat_view.completion(msgspec.json.encode(reply.completion())))
            return web.Response(body=msgspec.json.encode(whole), content_type="application/json")
        return await _send_events(
            http, responses.EventWriter(writer, _nothing).write(_frames(reply.frames()))
        )

    async def messages(self, http: web.Request) -> web.StreamResponse:
        try:
            request = decode_messages_request(await http.read(), LIMITS)
            chat = messages_chat_request(request, LIMITS)
        except GatewayError as exc:
            status, _, body = messages.error_response(exc)
            return web.Response(status=status, body=body, content_type="application/json")
        reply = await self._upstream.simulate(http, chat)
        if isinstance(reply, web.StreamResponse):
            return reply
        message_id = f"msg_{reply.ident}"
        if not chat.stream:
            completion = chat_view.completion(msgspec.json.encode(reply.completion()))
            whole = messages.whole(message_id, request.model, completion)
            return web.Response(body=msgspec.json.encode(whole), content_type="application/json")
        return await _send_events(
            http, messages.EventWriter(message_id, request.model).write(_frames(reply.frames()))
        )
