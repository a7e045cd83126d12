"""OpenAI-compatible LLM providers over one shared aiohttp session (OpenAI, Azure, vLLM, Ollama, ...)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import msgspec

from tiers.errors import UpstreamError
from tiers.llm.provider_batch import ProviderBatches, ProviderBatchSettings
from tiers.llm.sse import SSERelay
from tiers.llm.upstream_anthropic import AnthropicApi
from tiers.llm.upstream_apis import Api, ChatApi, UpstreamApi
from tiers.llm.upstream_responses import ResponsesApi
from tiers.types import ChatRequest, EmbeddingsRequest, StreamOptions, Usage

log = logging.getLogger("tiergate.upstream")


@dataclass(frozen=True, slots=True)
class Completion:
    body: bytes
    content: str | None
    usage: Usage | None
    tool_calls: tuple[tuple[str, str], ...] = ()


class Upstream(Protocol):
    name: str
    defers: bool  # has a Batch API of its own, for deferred requests

    async def complete(self, request: ChatRequest) -> Completion: ...

    async def embed(self, request: EmbeddingsRequest) -> bytes:
        """`/embeddings` of an upstream that serves them: the whole body."""
        ...

    async def complete_deferred(self, request: ChatRequest) -> Completion:
        """The answer through the upstream's own Batch API: late, and at its batch price."""
        ...

    async def close(self) -> None: ...

    async def stream(
        self,
        request: ChatRequest,
        *,
        include_usage: bool,
        prompt_tokens: Callable[[], int],
        max_repeats: int | None = None,
    ) -> SSERelay: ...


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    name: str
    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float | None = None
    max_output_tokens: int | None = None
    stream_usage: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    max_repeated_chunks: int = 100
    max_answer_bytes: int = 8 * 1024 * 1024  # a whole (non-streamed) answer larger than this fails
    batches: ProviderBatchSettings | None = None  # the upstream's own Batch API, when it has one
    api: Api = "chat"  # the API it speaks (tiers/llm/upstream_apis.py)


# Reported usage this far under the gateway's own count of the text is not believed: a completion
# token rarely covers more than a few characters, so an answer of N characters with far fewer than
# N / IMPLAUSIBLE_CHARS_PER_TOKEN tokens reported is counted again (and the count is used when it
# is more than twice the report).
IMPLAUSIBLE_CHARS_PER_TOKEN = 16
BEARER = re.compile(r"(?i)\bbearer\s+[^\s\"',;]+")


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """An upstream's text with its key, and any bearer token, taken out: what an upstream echoes
    back must never reach an agent or a record."""
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return BEARER.sub("Bearer [redacted]", text)


RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class _FunctionView(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class _ToolCallView(msgspec.Struct):
    function: _FunctionView | None = None


class _MessageView(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallView] | None = None


class _ChoiceView(msgspec.Struct):
    message: _MessageView | None = None


class _CompletionView(msgspec.Struct):
    choices: list[_ChoiceView] = []
    usage: Usage | None = None


class _ErrorDetail(msgspec.Struct):
    message: str = ""


class _ErrorView(msgspec.Struct):
    error: _ErrorDetail | str | None = None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_message(raw: bytes) -> str:
    try:
        view = msgspec.json.decode(raw, type=_ErrorView)
    except msgspec.DecodeError:
        return raw[:200].decode("utf-8", "replace")
    if isinstance(view.error, _ErrorDetail):
        return view.error.message[:500]
    return (view.error or "")[:500]


def _cap(request: ChatRequest, limit: int | None) -> int | None:
    """The most completion tokens a stream may carry: the request's caps, and the upstream's."""
    caps = [c for c in (request.max_completion_tokens, request.max_tokens, limit) if c is not None]
    return min(caps) if caps else None


def upstream_api(api: Api) -> UpstreamApi:
    """How to speak to an upstream of the given API."""
    if api == "responses":
        return ResponsesApi()
    if api == "anthropic":
        return AnthropicApi()
    return ChatApi()


class OpenAICompatibleUpstream:
    """Sends requests to `{base_url}/chat/completions`, with the configured model substituted."""

    def __init__(
        self,
        settings: UpstreamSettings,
        session: aiohttp.ClientSession,
        count_tokens: Callable[[str], int],
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._session = session
        self._count = count_tokens
        self._api = upstream_api(settings.api)
        self._url = f"{settings.base_url}{self._api.path}"
        # what is scrubbed from the upstream's error texts: its key, and the header values it is sent
        self._secrets = tuple(
            s for s in (settings.api_key, *(value for _, value in settings.headers)) if s and len(s) >= 8
        )
        headers = {"content-type": "application/json", **dict(settings.headers)}
        self._headers = {**headers, **self._api.headers(settings.api_key)}
        if settings.api_key:
            headers["authorization"] = f"Bearer {settings.api_key}"  # for its Batch API
        self._first_token_s = settings.first_token_timeout_s or settings.timeout_s
        self._connect_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_s, connect=settings.connect_timeout_s
        )
        self._batches = (
            None
            if settings.batches is None
            else ProviderBatches(settings.name, settings.base_url, headers, session, settings.batches)
        )
        self.defers = self._batches is not None

    async def complete_deferred(self, request: ChatRequest) -> Completion:
        if self._batches is None:
            return await self.complete(request)
        return self._completion(await self._batches.complete(self._outgoing(request, stream=False)))

    async def close(self) -> None:
        if self._batches is not None:
            await self._batches.close()

    def _outgoing(self, request: ChatRequest, *, stream: bool) -> bytes:
        if self._settings.max_output_tokens is not None:
            request = request.with_completion_cap(self._settings.max_output_tokens)
        changes: dict[str, object] = {"model": self._settings.model, "stream": stream}
        if stream:
            changes["stream_options"] = (
                StreamOptions(include_usage=True) if self._settings.stream_usage else request.stream_options
            )
        else:
            changes["stream_options"] = None
        return self._api.request(msgspec.structs.replace(request, **changes))

    async def _open(self, payload: bytes, url: str | None = None) -> aiohttp.ClientResponse:
        """Send, and wait for a 200 response head; the caller bounds the wait."""
        try:
            response = await self._session.post(
                url or self._url, data=payload, headers=self._headers, timeout=self._connect_timeout
            )
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"upstream {self.name!r} could not be reached ({type(exc).__name__})", retryable=True
            ) from None
        if response.status != 200:
            try:
                raw = await asyncio.wait_for(response.read(), self._settings.connect_timeout_s)
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                response.release()
            raise UpstreamError(
                f"upstream {self.name!r} answered {response.status}: "
                + scrub(_error_message(raw), self._secrets),
                status=response.status,
                retryable=response.status in RETRYABLE_STATUSES,
                retry_after_s=_retry_after(response.headers.get("retry-after")),
            )
        return response

    def _timed_out(self, started: bool) -> UpstreamError:
        if started:
            message = f"upstream {self.name!r} did not finish within {self._settings.timeout_s:g}s"
        else:
            message = f"upstream {self.name!r} sent nothing within {self._first_token_s:g}s"
        return UpstreamError(message, retryable=True, timeout=True)

    async def complete(self, request: ChatRequest) -> Completion:
        return self._completion(await self._fetch(self._outgoing(request, stream=False)))

    async def embed(self, request: EmbeddingsRequest) -> bytes:
        """`POST {base_url}/embeddings` with the configured model: the whole body."""
        payload = msgspec.json.encode(msgspec.structs.replace(request, model=self._settings.model))
        return await self._fetch(payload, f"{self._settings.base_url}/embeddings")

    async def _fetch(self, payload: bytes, url: str | None = None) -> bytes:
        """A whole answer's body, within the time limits."""
        response: aiohttp.ClientResponse | None = None
        # One timer for both limits: first the time to the response head, then the total.
        try:
            async with asyncio.timeout(self._first_token_s) as timer:
                began = asyncio.get_running_loop().time()
                response = await self._open(payload, url)
                timer.reschedule(began + self._settings.timeout_s)
                body = await self._read(response)
        except TimeoutError:
            if response is not None:
                response.close()
            raise self._timed_out(response is not None) from None
        except aiohttp.ClientError as exc:
            if response is not None:
                response.close()
            raise UpstreamError(
                f"upstream {self.name!r} broke off its answer ({type(exc).__name__})", retryable=True
            ) from None
        finally:
            if response is not None:
                response.release()
        return body

    def _completion(self, body: bytes) -> Completion:
        try:
            body = self._api.answer(body)
            view = msgspec.json.decode(body, type=_CompletionView)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise UpstreamError(
                f"upstream {self.name!r} answered with malformed JSON", status=502, retryable=True
            ) from None
        message = view.choices[0].message if view.choices else None
        content = message.content if message else None
        return Completion(
            body=body,
            content=content,
            usage=self._believable(view.usage, content),
            tool_calls=tuple(
                (call.function.name, call.function.arguments)
                for call in (message.tool_calls or [] if message else [])
                if call.function is not None
            ),
        )

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body, up to the size limit of an answer."""
        limit = self._settings.max_answer_bytes
        too_large = UpstreamError(f"upstream {self.name!r} sent an answer over {limit} bytes", status=502)
        if (response.content_length or 0) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while chunk := await response.content.read(65536):  # empty at the end of the body
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _believable(self, usage: Usage | None, content: str | None) -> Usage | None:
        """The reported usage, or None (the gateway counts) when it is implausibly low against the
        text the upstream sent."""
        if (
            usage is None
            or not content
            or len(content) <= usage.completion_tokens * IMPLAUSIBLE_CHARS_PER_TOKEN
        ):
            return usage
        counted = self._count(content)
        if counted <= 2 * usage.completion_tokens:
            return usage
        log.warning(
            "upstream %r reported %d completion tokens for a text of %d; the gateway's count is used",
            self.name,
            usage.completion_tokens,
            counted,
        )
        return None

    async def stream(
        self,
        request: ChatRequest,
        *,
        include_usage: bool,
        prompt_tokens: Callable[[], int],
        max_repeats: int | None = None,
    ) -> SSERelay:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._first_token_s):
                response = await self._open(self._outgoing(request, stream=True))
        except TimeoutError:
            raise self._timed_out(False) from None
        relay = SSERelay(
            response,
            upstream=self.name,
            include_usage=include_usage,
            prompt_tokens=prompt_tokens,
            count_tokens=self._count,
            deadline=started + self._settings.timeout_s,
            first_token_deadline=started + self._first_token_s,
            max_repeats=max_repeats or self._settings.max_repeated_chunks,
            max_completion_tokens=_cap(request, self._settings.max_output_tokens),
            reader=None if self._settings.api == "chat" else self._api.stream_reader(),
        )
        # Wait for the first event here, so failures before any byte reaches the client can still
        # be retried or escalated instead of breaking a stream that has already begun.
        try:
            await relay.prime()
        except UpstreamError:
            await relay.aclose()
            raise
        return relay
