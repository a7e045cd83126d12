"""`POST /v1/responses` and `GET /v1/responses/{id}`: OpenAI's Responses API, translated at the edge
(gateway/dialects/responses*.py), so a request gets the same tiers, budgets, cache, validation,
approvals and records as a chat completion. With `store` (the default) and a decision store, a
response is kept for `store.responses_keep_days`: `previous_response_id` continues from it, and
`GET /v1/responses/{id}` returns it to the agent that made it (`DELETE` forgets it)."""

from __future__ import annotations

import logging

import msgspec
from litestar import Request, Response, asgi, delete, get
from litestar.types import Receive, Scope, Send

from gateway.config.models import AgentConfig
from gateway.dialects import chat_view
from gateway.dialects.responses import EventWriter, FunctionCallItem, ResponseObject, ResponseWriter
from gateway.dialects.responses_request import (
    ResponsesRequest,
    chat_request,
    decode_responses_request,
    input_messages,
)
from gateway.errors import GatewayError, NotFound, clip
from gateway.http.edge import bearer_key, serve
from gateway.http.state import current_gateway
from gateway.pipeline.results import ChatResult, Frames
from gateway.runtime.build import Gateway
from gateway.store.responses import StoredResponse
from tiers.types import FunctionCall, Message, ToolCall

log = logging.getLogger("tiergate")

RESPONSES_PATH = "/v1/responses"
_JSON = "application/json"


def _assistant_turn(response: ResponseObject) -> list[Message]:
    """A finished response's output as the chat message a later turn continues from."""
    texts, calls = [], []
    for item in response.output:
        if isinstance(item, FunctionCallItem):
            calls.append(ToolCall(id=item.call_id, function=FunctionCall(item.name, item.arguments)))
        else:
            texts += [part.text for part in item.content]
    return [Message(role="assistant", content="".join(texts) or None, tool_calls=calls or None)]


class _ResponsesExchange:
    __slots__ = ("_gateway", "_stores", "_turn", "agent", "original", "request")

    def __init__(
        self,
        gateway: Gateway,
        agent: AgentConfig,
        original: ResponsesRequest,
        history: list[Message],
    ) -> None:
        self._gateway = gateway
        self.agent = agent
        self.original = original
        self._turn = history + input_messages(original.input)  # what a later turn continues from
        self._stores = original.store is not False and gateway.store is not None
        self.request = chat_request(original, self._turn, gateway.limits)

    def _writer(self, result: ChatResult) -> ResponseWriter:
        return ResponseWriter(self.original, result.headers["x-tiergate-decision-id"], self._stores)

    async def body(self, result: ChatResult) -> bytes:
        response = self._writer(result).whole(chat_view.completion(result.body or b""))
        await self._keep(response)
        return msgspec.json.encode(response)

    def frames(self, result: ChatResult) -> Frames:
        assert result.stream is not None
        events = EventWriter(self._writer(result), self._keep)
        return chat_view.TranslatedFrames(result.stream, events.write(result.stream))

    async def _keep(self, response: ResponseObject) -> None:
        """The response, and the conversation it ends, kept for a later turn (instructions are
        not carried over: a later turn gives its own)."""
        if not self._stores:
            return
        assert self._gateway.store is not None
        history = msgspec.json.encode(self._turn + _assistant_turn(response))
        try:
            await self._gateway.store.responses.put(
                StoredResponse(response.id, self.agent.id, msgspec.json.encode(response), history)
            )
        except Exception as exc:  # the answer still goes out; only the continuation is lost
            log.error("response %s could not be stored: %s", response.id, exc)


class ResponsesDialect:
    name = "responses"

    agent_key = staticmethod(bearer_key)

    @staticmethod
    async def exchange(gateway: Gateway, agent: AgentConfig, body: bytes) -> _ResponsesExchange:
        request = decode_responses_request(body, gateway.limits)
        history: list[Message] = []
        if request.previous_response_id is not None:
            found = await _stored(gateway, agent, request.previous_response_id, "previous_response_id")
            history = msgspec.json.decode(found.history, type=list[Message])
        return _ResponsesExchange(gateway, agent, request, history)

    @staticmethod
    def error(error: GatewayError) -> tuple[int, dict[str, str], bytes]:
        return error.status, error.headers(), error.body()


RESPONSES = ResponsesDialect()


async def _stored(
    gateway: Gateway, agent: AgentConfig, response_id: str, param: str | None
) -> StoredResponse:
    """A response this agent stored; 404 for any other (another agent's does not exist for it)."""
    if gateway.store is None:
        raise NotFound(
            f"no response with id {clip(response_id)!r}: responses are kept only with a decision store"
            " (the `store` section of the config)",
            param=param,
            code="store_disabled",
        )
    found = await gateway.store.responses.get(response_id)
    if found is None or found.agent != agent.id:
        raise NotFound(f"no response with id {clip(response_id)!r}", param=param, code="response_not_found")
    return found


@asgi(RESPONSES_PATH, copy_scope=False)
async def create_response(scope: Scope, receive: Receive, send: Send) -> None:
    await serve(RESPONSES, scope["litestar_app"].state.holder.current, scope, receive, send)


@get(RESPONSES_PATH + "/{response_id:str}")
async def get_response(request: Request) -> Response[bytes]:
    gateway = current_gateway(request)
    agent = gateway.agents.authenticate(request.headers.get("authorization"))
    found = await _stored(gateway, agent, request.path_params["response_id"], None)
    return Response(found.response, media_type=_JSON)


@delete(RESPONSES_PATH + "/{response_id:str}", status_code=200)
async def delete_response(request: Request) -> Response[bytes]:
    gateway = current_gateway(request)
    agent = gateway.agents.authenticate(request.headers.get("authorization"))
    response_id = request.path_params["response_id"]
    await _stored(gateway, agent, response_id, None)  # 404 unless the agent has it
    assert gateway.store is not None
    await gateway.store.responses.delete(response_id, agent.id)
    body = msgspec.json.encode({"id": response_id, "object": "response", "deleted": True})
    return Response(body, media_type=_JSON)


RESPONSES_HANDLERS = [create_response, get_response, delete_response]
