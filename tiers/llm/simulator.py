"""The simulated upstream: an OpenAI-compatible server with deterministic answers, real token
counts, streaming, configurable latency and scriptable faults. Users try tiergate with it offline;
the tests and benchmarks use it.

Faults and latency are chosen per request by directives after a `+` in the model name, or for a
model name by the `faults` table:

    sim-small                      a normal answer
    sim-small+latency=50           50 ms before answering (plus per-token time)
    sim-small+fault=500            answer HTTP 500 (any status: 429, 502, 503, ...)
    sim-small+fault=hang           never answer
    sim-small+fault=reset          close the connection without answering
    sim-small+fault=broken-json    a 200 whose body is not JSON (in a stream: a broken event)
    sim-small+fault=cut            a stream that stops mid-way without [DONE]
    sim-small+fault=stutter        a stream that repeats one chunk over and over
    sim-small+fault=slow-first     the first token arrives after 10 s
    sim-small+fault=no-usage       leave `usage` out
    sim-small+fault=wrong-schema   structured answers (and tool arguments) that break their schema
    sim-small+fault=invalid-json   structured answers that are not JSON at all
    sim-small+fault=huge-line      a stream whose first event is one line of over 1 MiB
    sim-small+fault=ignore-cap     an answer of 3,000 words whatever the completion cap
    sim-small+fault=low-usage      report 1 completion token, whatever was generated
    sim-small+fault=echo-auth      answer 401 quoting the Authorization header it received
    sim-small+fail-first=2         the first 2 requests for this model name answer 503, then normally
    sim-small+wrong-first=1        the first structured answer for this model name breaks its schema

It also has OpenAI's Batch API (simulator_batches.py), each line answered as above, and
`/v1/embeddings` (simulator_embeddings.py: a deterministic vector per input, with the same faults),
and OpenAI's Responses and Anthropic's Messages APIs (simulator_apis.py: the same answers, for
upstreams configured with `api: responses` or `api: anthropic`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from aiohttp import web

from tiers.llm.simulator_apis import OtherApis
from tiers.llm.simulator_batches import SimulatedBatches
from tiers.llm.simulator_embeddings import embeddings_body
from tiers.llm.simulator_reply import Reply
from tiers.types import ChatRequest, EmbeddingsRequest, Usage

_WORDS = [
    "the",
    "request",
    "was",
    "reviewed",
    "and",
    "the",
    "most",
    "likely",
    "answer",
    "follows",
    "from",
    "the",
    "context",
    "given",
    "by",
    "the",
    "agent",
    "with",
    "routine",
    "cases",
    "resolved",
    "directly",
    "while",
    "unusual",
    "ones",
    "are",
    "noted",
    "for",
    "a",
    "person",
    "to",
    "check",
    "later",
]


class TextCounter(Protocol):
    def count(self, text: str) -> int: ...

    def count_messages(self, messages: Iterable[tuple[str, str | None]]) -> int: ...


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    latency_ms: float = 0.0
    per_token_ms: float = 0.0
    reply_words: int = 24
    faults: dict[str, str] = field(default_factory=dict)
    batch_delay_s: float = 0.0  # how long a provider batch takes to run


@dataclass(slots=True)
class SimulatorStats:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embedded_tokens: int = 0
    by_model: Counter[str] = field(default_factory=Counter)
    by_path: Counter[str] = field(default_factory=Counter)  # the endpoint each request came to


class _Directives(msgspec.Struct):
    fault: str | None = None
    latency_ms: float | None = None
    fail_first: int = 0
    wrong_first: int = 0


def parse_directives(model: str, table: dict[str, str]) -> _Directives:
    base, *parts = model.split("+")
    directives = _Directives(fault=table.get(model) or table.get(base))
    for part in parts:
        key, _, value = part.partition("=")
        if key == "fault":
            directives.fault = value
        elif key == "latency":
            directives.latency_ms = float(value)
        elif key == "fail-first":
            directives.fail_first = int(value)
        elif key == "wrong-first":
            directives.wrong_first = int(value)
    return directives


def example_of(schema: dict[str, Any], wrong: bool = False) -> Any:
    """A small instance of a JSON schema (or, when `wrong`, one that breaks it)."""
    if wrong:
        return {"unexpected": True} if schema.get("type") != "object" or schema.get("required") else 42
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            return example_of(schema[combinator][0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: example_of(properties[name]) for name in properties}
    if kind == "array":
        minimum = schema.get("minItems", 0)
        return [example_of(schema.get("items", {"type": "string"})) for _ in range(minimum)]
    return {"string": "example", "integer": 0, "number": 0, "boolean": False, "null": None}.get(
        kind, "example"
    )


def error_response(
    status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class SimulatedUpstream:
    def __init__(self, settings: SimulatorSettings, counter: TextCounter) -> None:
        self.settings = settings
        self.stats = SimulatorStats()
        self._counter = counter
        self._count = counter.count
        self._seen: Counter[str] = Counter()
        self.batches = SimulatedBatches(self.answer_line, settings.batch_delay_s)

    def reply_text(self, request: ChatRequest, wrong_schema: bool) -> str:
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
            return msgspec.json.encode(example_of(fmt.json_schema.schema or {}, wrong_schema)).decode()
        if fmt is not None and fmt.type == "json_object":
            return '{"answer": "simulated"}' if not wrong_schema else '{"answer": 42}'
        digest = hashlib.sha256(request.last_user_text().encode()).digest()
        words = [_WORDS[b % len(_WORDS)] for b in digest]
        while len(words) < self.settings.reply_words:
            words.extend(words)
        return "Simulated answer: " + " ".join(words[: self.settings.reply_words]) + "."

    def tool_calls(self, request: ChatRequest, wrong: bool) -> list[dict[str, Any]]:
        """A call of the named (or, with tool_choice "required", the first) tool. With "auto" (the
        default) it behaves like an agent's model: it calls the first tool, and answers in words
        once a tool's result is in the conversation."""
        if not request.tools or request.tool_choice == "none":
            return []
        if request.tool_choice in (None, "auto") and any(m.role == "tool" for m in request.messages):
            return []
        tool = request.tools[0]
        if isinstance(request.tool_choice, dict):
            wanted = request.tool_choice.get("function", {}).get("name")
            tool = next((t for t in request.tools if t.function.name == wanted), tool)
        arguments = example_of(tool.function.parameters or {"type": "object"}, wrong)
        return [
            {
                "id": f"call_sim{self.stats.requests}",
                "type": "function",
                "function": {
                    "name": tool.function.name,
                    "arguments": msgspec.json.encode(arguments).decode(),
                },
            }
        ]

    def _truncate(self, text: str, cap: int | None) -> tuple[str, int, str]:
        tokens = self._count(text)
        if cap is None or tokens <= cap:
            return text, tokens, "stop"
        words = text.split(" ")
        while words and self._count(" ".join(words)) > cap:
            words = words[: max(0, min(len(words) - 1, len(words) * cap // max(tokens, 1)))]
        text = " ".join(words)
        return text, self._count(text), "length"

    def prompt_tokens(self, request: ChatRequest) -> int:
        return self._counter.count_messages((m.text(), m.name) for m in request.messages)

    async def handle(self, http: web.Request) -> web.StreamResponse:
        try:
            request = msgspec.json.decode(await http.read(), type=ChatRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return error_response(400, str(exc), "invalid_request_error", None)
        self.stats.by_path[http.path] += 1
        directives = parse_directives(request.model, self.settings.faults)
        fault = self._fault_of(request.model, directives)
        refused = await self._refuse(http, fault, request.stream)
        if refused is not None:
            return refused
        if fault == "slow-first":
            await asyncio.sleep(10)
        reply = self._reply(request, fault)
        latency = directives.latency_ms if directives.latency_ms is not None else self.settings.latency_ms
        if request.stream:
            return await self._stream(http, reply, latency)
        if latency or self.settings.per_token_ms:
            await asyncio.sleep((latency + self.settings.per_token_ms * reply.usage.completion_tokens) / 1000)
        if fault == "broken-json":
            return web.Response(
                body=b'{"id": "chatcmpl-broken", "choices": [', content_type="application/json"
            )
        return web.Response(body=msgspec.json.encode(reply.completion()), content_type="application/json")

    async def simulate(self, http: web.Request, request: ChatRequest) -> Reply | web.StreamResponse:
        """The reply to a request of another API once translated, or the fault it gets instead."""
        self.stats.by_path[http.path] += 1
        directives = parse_directives(request.model, self.settings.faults)
        refused = await self._refuse(http, self._fault_of(request.model, directives), False)
        if refused is not None:
            return refused
        latency = directives.latency_ms if directives.latency_ms is not None else self.settings.latency_ms
        if latency:
            await asyncio.sleep(latency / 1000)
        return self._reply(request, directives.fault or "")

    def answer_line(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """A Batch API line's status and body, as the chat endpoint would answer it."""
        try:
            request = msgspec.json.decode(body, type=ChatRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return 400, {"error": {"message": str(exc), "type": "invalid_request_error", "code": None}}
        fault = self._fault_of(request.model, parse_directives(request.model, self.settings.faults))
        if fault.isdigit():
            return int(fault), {
                "error": {"message": f"simulated {fault}", "type": "api_error", "code": fault}
            }
        return 200, self._reply(request, fault).completion()

    def _fault_of(self, model: str, directives: _Directives) -> str:
        """The fault this request gets, counting the requests per model name for `fail-first`
        and `wrong-first`."""
        self._seen[model] += 1
        if self._seen[model] <= directives.fail_first:
            return "503"
        if self._seen[model] <= directives.wrong_first:
            return "wrong-schema"
        return directives.fault or ""

    @staticmethod
    async def _refuse(http: web.Request, fault: str, stream: bool) -> web.StreamResponse | None:
        """The faults that answer no completion: hang, reset, an HTTP error status, a huge line."""
        if fault == "echo-auth":
            received = http.headers.get("authorization", "")
            message = f"Incorrect API key provided: {received}"
            return error_response(401, message, "invalid_request_error", "invalid_api_key")
        if fault == "huge-line" and stream:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(http)
            await response.write(b'data: {"id": "' + b"x" * (1024 * 1024 + 1) + b'", "choices": []}\n\n')
            await response.write_eof()
            return response
        if fault == "hang":
            await asyncio.sleep(3600)
        if fault == "reset":
            assert http.transport is not None
            http.transport.close()
            return web.Response()
        if fault.isdigit():
            headers = {"retry-after": "1"} if fault in ("429", "503") else {}
            return error_response(int(fault), f"simulated {fault}", "api_error", fault, headers)
        return None

    def _reply(self, request: ChatRequest, fault: str) -> Reply:
        text = self.reply_text(request, fault == "wrong-schema")
        if fault == "invalid-json":
            text = "Sure! Here is the JSON you asked for: {category: shipping"
        calls = self.tool_calls(request, fault == "wrong-schema")
        if fault == "ignore-cap":
            text = " ".join(_WORDS[i % len(_WORDS)] for i in range(3000))
        text, completion, finish = self._truncate(
            text, None if fault == "ignore-cap" else request.completion_cap()
        )
        if calls:
            text, finish = "", "tool_calls"
            completion = self._count(msgspec.json.encode(calls).decode())
        usage = Usage.of(self.prompt_tokens(request), 1 if fault == "low-usage" else completion)
        self.stats.requests += 1
        self.stats.prompt_tokens += usage.prompt_tokens
        self.stats.completion_tokens += usage.completion_tokens
        self.stats.by_model[request.model] += 1
        return Reply(
            request, text, calls, finish, usage, f"chatcmpl-sim{self.stats.requests}", int(time.time()), fault
        )

    async def _stream(self, http: web.Request, reply: Reply, latency: float) -> web.StreamResponse:
        try:
            return await self._send_stream(http, reply, latency)
        except ConnectionResetError:  # the client (the gateway) went away: nothing left to send
            return web.StreamResponse()

    async def _send_stream(self, http: web.Request, reply: Reply, latency: float) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(http)
        if latency:
            await asyncio.sleep(latency / 1000)
        for opening in reply.opening():
            await response.write(opening)
        pieces = reply.pieces()
        per_piece = self.settings.per_token_ms * reply.usage.completion_tokens / max(1, len(pieces)) / 1000
        if reply.fault == "stutter":
            pieces = pieces[:2] + ["again "] * 500
        for i, piece in enumerate(pieces):
            if per_piece:
                await asyncio.sleep(per_piece)
            if reply.fault == "cut" and i >= len(pieces) // 2:
                assert http.transport is not None
                http.transport.close()
                return response
            if reply.fault == "broken-json" and i == len(pieces) // 2:
                await response.write(b'data: {"id": "broken", "choices": [\n\n')
                continue
            await response.write(reply.chunk({"content": piece}, None))
        await response.write(reply.chunk({}, reply.finish))
        options = reply.request.stream_options
        if options is not None and options.include_usage and reply.fault != "no-usage":
            await response.write(reply.usage_chunk())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def handle_embeddings(self, http: web.Request) -> web.StreamResponse:
        try:
            request = msgspec.json.decode(await http.read(), type=EmbeddingsRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return error_response(400, str(exc), "invalid_request_error", None)
        self.stats.by_path[http.path] += 1
        directives = parse_directives(request.model, self.settings.faults)
        refused = await self._refuse(http, self._fault_of(request.model, directives), False)
        if refused is not None:
            return refused
        body = embeddings_body(request, self._count)
        self.stats.requests += 1
        self.stats.embedded_tokens += body["usage"]["prompt_tokens"]
        self.stats.by_model[request.model] += 1
        return web.Response(body=msgspec.json.encode(body), content_type="application/json")

    async def handle_stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.stats.requests,
                "prompt_tokens": self.stats.prompt_tokens,
                "completion_tokens": self.stats.completion_tokens,
                "embedded_tokens": self.stats.embedded_tokens,
                "by_model": dict(self.stats.by_model),
                "by_path": dict(self.stats.by_path),
                "batches": self.batches.created,
                "batched_requests": self.batches.lines,
            }
        )

    async def handle_models(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "sim", "object": "model", "owned_by": "sim"}]}
        )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/chat/completions", self.handle)
        app.router.add_post("/v1/embeddings", self.handle_embeddings)
        app.router.add_post("/embeddings", self.handle_embeddings)
        other_apis = OtherApis(self)
        app.router.add_post("/v1/responses", other_apis.responses)
        app.router.add_post("/v1/messages", other_apis.messages)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_get("/stats", self.handle_stats)
        self.batches.routes(app)
        return app


def run_simulator(host: str, port: int, settings: SimulatorSettings, counter: TextCounter) -> None:
    simulated = SimulatedUpstream(settings, counter)
    web.run_app(simulated.app(), host=host, port=port, print=None, access_log=None, shutdown_timeout=1.0)
