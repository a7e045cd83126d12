"""The request path of `POST /v1/embeddings`, shorter than a chat's: no tiers to climb, one answer
of a known cost.

    admission   the model names a route that serves embeddings, and the agent may use it
    budget      its input tokens held (counted by the gateway; token-id inputs by their length)
    cache       a stored answer (embeddings are deterministic: cached unless the route says not),
                or a place in the key's single flight
    upstream    the route's embedding upstreams in order, the next tried when one fails
    settle      the budget charged what the upstream reported (or the gateway counted), the
                answer stored, the decision recorded: once, however the request ends
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import msgspec

from budgets.policy import Estimate, Reservation
from budgets.tokens import TokenCounter
from gateway.cache.backends import CachedAnswer, scope_prefix
from gateway.cache.flight import CacheControl, Flight, ResponseCache
from gateway.config.models import AgentConfig
from gateway.errors import BadRequest, Forbidden, NotFound, Unavailable, UpstreamFailed, UpstreamTimeout, clip
from gateway.http.wire import InputLimits, decode_json
from gateway.pipeline.budget import BudgetStep
from gateway.pipeline.results import decision_headers
from gateway.pipeline.routes import allowed
from gateway.pipeline.settlement import Draft, Ending, Records
from tiers.types import ChatRequest, EmbeddingsRequest, Escalate, Message, Usage

TIER = "embeddings"
MAX_INPUTS = 2048  # OpenAI's limit on the items of one request
_DECODER = msgspec.json.Decoder(EmbeddingsRequest)


class Embedder(Protocol):
    """An upstream that serves embeddings, behind its retries and circuit breaker
    (tiers/llm/tier.py): the body, or why it could not be had."""

    async def embed(self, request: EmbeddingsRequest) -> bytes | Escalate: ...


@dataclass(frozen=True, slots=True)
class EmbeddingRoute:
    name: str
    upstreams: tuple[tuple[str, Embedder, float], ...]  # name, caller, input price (micro-dollars a token)
    cache: bool = True


class _UsageView(msgspec.Struct):
    prompt_tokens: int = 0
    total_tokens: int = 0


class _AnswerView(msgspec.Struct):
    data: list[msgspec.Raw] = []
    usage: _UsageView | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingsResult:
    headers: dict[str, str]
    body: bytes


def _is_ids(item: object) -> bool:
    return isinstance(item, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in item)


def _check(request: EmbeddingsRequest, limits: InputLimits) -> None:
    items = [request.input] if isinstance(request.input, str) else request.input
    if not items:
        raise BadRequest("input must not be empty", param="input")
    if not (
        all(isinstance(item, str) for item in items) or _is_ids(items) or all(_is_ids(item) for item in items)
    ):
        raise BadRequest(
            "input must be a string, a list of strings, a list of token ids or a list of such lists",
            param="input",
        )
    if len(items) > MAX_INPUTS:
        raise BadRequest(f"input holds {len(items)} items; the limit is {MAX_INPUTS}", param="input")
    if any(item == "" or item == [] for item in items):
        raise BadRequest("input must not hold an empty string or an empty list of tokens", param="input")
    texts = request.texts()
    if texts is not None and sum(map(len, texts)) > limits.max_total_chars:
        raise BadRequest(f"input holds over {limits.max_total_chars} characters", param="input")
    if request.dimensions is not None and request.dimensions < 1:
        raise BadRequest("dimensions must be at least 1", param="dimensions")


class EmbeddingsPath:
    def __init__(
        self,
        routes: dict[str, EmbeddingRoute],
        budget: BudgetStep,
        cache: ResponseCache,
        cache_wait_s: float,
        cache_scope: str,
        counter: TokenCounter,
        records: Records,
        limits: InputLimits,
    ) -> None:
        self._routes = routes
        self._budget = budget
        self._cache = cache
        self._cache_wait_s = cache_wait_s
        self._scope = cache_scope
        self._counter = counter
        self._records = records
        self._limits = limits
        self._id_prefix = secrets.token_hex(11)
        self._ids = itertools.count()

    def decode(self, body: bytes) -> EmbeddingsRequest:
        request = decode_json(body, _DECODER, self._limits.max_body_bytes)
        _check(request, self._limits)
        return request

    def _route(self, agent: AgentConfig, model: str) -> EmbeddingRoute:
        route = self._routes.get(model)
        if route is None:
            raise NotFound(
                f"the model {clip(model)!r} serves no embeddings; a route lists its embedding upstreams"
                " under `embeddings`",
                param="model",
            )
        if not allowed(agent, model):
            raise Forbidden(
                f"agent {agent.id!r} may not use the model {clip(model)!r}",
                param="model",
                code="model_not_allowed",
            )
        return route

    def input_tokens(self, request: EmbeddingsRequest) -> int:
        texts = request.texts()
        if texts is not None:
            return sum(self._counter.count(text) for text in texts)
        items = request.input
        return len(items) if items and isinstance(items[0], int) else sum(map(len, items))  # type: ignore[arg-type]

    def _key(self, agent: AgentConfig, request: EmbeddingsRequest) -> str:
        payload = msgspec.json.encode(msgspec.structs.replace(request, user=None))
        prefix = scope_prefix(self._scope, agent.id, request.model)
        return f"{prefix}:{TIER}:{hashlib.sha256(payload).hexdigest()}"

    async def embed(
        self, agent: AgentConfig, request: EmbeddingsRequest, control: CacheControl
    ) -> EmbeddingsResult:
        draft = self._draft(agent, request)
        try:
            route = self._route(agent, request.model)
            tokens = self.input_tokens(request)
            dearest = max(price for _, _, price in route.upstreams)
            reservation = await self._budget.reserve_fixed(agent, Estimate(tokens, 0, dearest, 0.0))
        except BaseException as exc:
            self._records.refused(draft, clip(request.model), exc)
            raise
        flight: Flight | None = None
        outcome = "bypass"
        ending: Ending | None = None
        answered: tuple[str, bytes, int, float] | None = None  # upstream, body, tokens, price
        try:
            if route.cache and (control.read or control.write):
                cached, flight = await self._cache.lookup(
                    self._key(agent, request), control, self._cache_wait_s
                )
                outcome = "miss" if cached is None else "hit"
                if cached is not None and cached.body is not None:
                    ending = Ending(status=200)
                    return self._result(draft, outcome, cached.body)
            answered = await self._ask(route, request, tokens)
            _, body, used, _ = answered
            ending = Ending(
                status=200,
                usage=Usage.of(used, 0),
                cache_entry=CachedAnswer(TIER, None, body, 1.0, Usage.of(used, 0)),
            )
            return self._result(draft, outcome, body)
        except BaseException as exc:
            ending = Ending.failed(exc)
            raise
        finally:
            await self._finish(draft, route, reservation, flight, control, outcome, ending, answered)

    async def _ask(
        self, route: EmbeddingRoute, request: EmbeddingsRequest, tokens: int
    ) -> tuple[str, bytes, int, float]:
        failures: list[Escalate] = []
        for name, upstream, price in route.upstreams:
            body = await upstream.embed(request)
            if isinstance(body, Escalate):
                failures.append(body)
                if body.status == 400:  # the input itself was refused: another upstream would too
                    raise BadRequest(body.reason, param="input")
                continue
            try:
                view = msgspec.json.decode(body, type=_AnswerView)
            except (msgspec.DecodeError, msgspec.ValidationError):
                failures.append(Escalate(tier=name, reason=f"upstream {name!r} answered with malformed JSON"))
                continue
            reported = view.usage.prompt_tokens if view.usage is not None else 0
            return name, body, reported or tokens, price
        reasons = "; ".join(f.reason for f in failures)
        if failures and all(f.status == 504 for f in failures):
            raise UpstreamTimeout(reasons)
        if failures and all(f.status == 503 for f in failures):
            retry = min(f.retry_after_s or 1.0 for f in failures)
            raise Unavailable(f"no embedding upstream can answer now: {reasons}", retry_after_s=retry)
        raise UpstreamFailed("no embedding upstream answered: " + reasons)

    def _draft(self, agent: AgentConfig, request: EmbeddingsRequest) -> Draft:
        """The record's start; it shows the first input as the request's text."""
        texts = request.texts() or []
        shown = ChatRequest(
            model=request.model, messages=[Message(role="user", content=texts[0] if texts else "")]
        )
        return Draft(
            f"{self._id_prefix}{next(self._ids):010x}", agent, shown, time.perf_counter(), time.time()
        )

    @staticmethod
    def _result(draft: Draft, cache: str, body: bytes) -> EmbeddingsResult:
        headers = decision_headers(draft.id, TIER, 1.0)
        headers["x-tiergate-cache"] = cache
        return EmbeddingsResult(headers, body)

    async def _finish(
        self,
        draft: Draft,
        route: EmbeddingRoute,
        reservation: Reservation | None,
        flight: Flight | None,
        control: CacheControl,
        cache: str,
        ending: Ending | None,
        answered: tuple[str, bytes, int, float] | None,
    ) -> None:
        """Settle, land the flight, record: each step even when the one before it fails."""
        upstream, _, tokens, price = answered if answered is not None else (None, b"", 0, 0.0)
        micro_usd = round(tokens * price)
        ending = ending or Ending(status=499, error="client disconnected")
        try:
            await self._budget.settle(reservation, tokens, micro_usd)
        finally:
            try:
                if flight is not None:
                    await flight.land(ending.cache_entry, control.ttl_s, control.write)
            finally:
                self._records.write(
                    draft,
                    route.name,
                    ending.status,
                    cache=cache,
                    tier=TIER if ending.status == 200 else None,
                    upstream=upstream,
                    prompt_tokens=tokens,
                    cost_usd=micro_usd / 1_000_000,
                    error=ending.error,
                    error_code=ending.error_code,
                )


def embedding_routes(
    routes: dict[str, list[str]],
    embedders: Mapping[str, Embedder],
    prices: dict[str, float],
    cached: set[str],
) -> dict[str, EmbeddingRoute]:
    """Each route that lists embedding upstreams, with their input prices."""
    return {
        name: EmbeddingRoute(
            name, tuple((u, embedders[u], prices[u]) for u in upstreams), cache=name in cached
        )
        for name, upstreams in routes.items()
    }
