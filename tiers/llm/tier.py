"""The LLM tier: one upstream, with the gateway's only retry loop (full-jitter exponential backoff)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tiers.base import TierRequest
from tiers.errors import UpstreamError
from tiers.llm.circuit import CircuitBreaker, CircuitSettings
from tiers.llm.guards import Bulkhead, RetryBudget
from tiers.llm.upstream import Completion, Upstream
from tiers.types import Answer, EmbeddingsRequest, Escalate

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_s: float = 0.1
    max_s: float = 2.0

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        return rng() * min(self.max_s, self.base_s * (2**attempt))


class LLMTier:
    def __init__(
        self,
        upstream: Upstream,
        retry: RetryPolicy,
        breaker: CircuitBreaker | None = None,
        budget: RetryBudget | None = None,
        bulkhead: Bulkhead | None = None,
        *,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.upstream = upstream
        self.name = f"llm:{upstream.name}"
        self._retry = retry
        self.breaker = breaker or CircuitBreaker(CircuitSettings())
        self._budget = budget or RetryBudget()
        self._bulkhead = bulkhead or Bulkhead(None, 0.0)
        self._rng = rng
        self._sleep = sleep

    def _circuit_open(self) -> Escalate:
        wait = self.breaker.retry_after()
        return Escalate(
            tier=self.name,
            reason=f"circuit open for upstream {self.upstream.name!r} (retry in {wait:.0f}s)",
            status=503,
            retry_after_s=wait,
        )

    async def decide(self, request: TierRequest) -> Answer | Escalate:
        if request.deferred and self.upstream.defers:  # no place held: the provider runs it later
            return await self._decide(request)
        began = time.perf_counter()
        entered = await self._bulkhead.enter(request.lane)
        request.waited_ms += (time.perf_counter() - began) * 1000
        if not entered:
            return self._full()
        try:
            result = await self._decide(request)
        except BaseException:
            self._bulkhead.leave()
            raise
        if isinstance(result, Answer) and result.stream is not None:
            result.stream.on_close = self._bulkhead.leave  # held until the stream ends
        else:
            self._bulkhead.leave()
        return result

    def _full(self) -> Escalate:
        return Escalate(
            tier=self.name,
            reason=f"upstream {self.upstream.name!r} is at its concurrency limit",
            status=503,
            retry_after_s=1.0,
        )

    async def _decide(self, request: TierRequest) -> Answer | Escalate:
        return await self._guarded(lambda: self._attempt(request))

    async def embed(self, request: EmbeddingsRequest) -> bytes | Escalate:
        """An embeddings call to this upstream, behind the same place limit, retries and circuit
        breaker as its completions: the body, or why it could not be had."""
        if not await self._bulkhead.enter("normal"):
            return self._full()
        try:
            return await self._guarded(lambda: self.upstream.embed(request))
        finally:
            self._bulkhead.leave()

    async def _guarded(self, attempt_once: Callable[[], Awaitable[T]]) -> T | Escalate:
        """The call, retried with backoff while it fails in a way worth retrying (and the retry
        budget allows), unless the circuit is open; each outcome recorded by the breaker."""
        self._budget.record_request()
        attempt = 0
        while True:
            if not self.breaker.allow():
                return self._circuit_open()
            try:
                result = await attempt_once()
            except UpstreamError as exc:
                self.breaker.record(exc.retryable, exc.retry_after_s)
                wait = self._retry.backoff(attempt, self._rng)
                if exc.retry_after_s is not None:
                    wait = max(wait, exc.retry_after_s)
                if (
                    not exc.retryable
                    or attempt >= self._retry.max_retries
                    or wait > self._retry.max_s
                    or not self._budget.try_retry()
                ):
                    return Escalate(
                        tier=self.name,
                        reason=exc.message,
                        status=exc.client_status,
                        retry_after_s=exc.retry_after_s,
                    )
            except BaseException:
                self.breaker.release()
                raise
            else:
                self.breaker.record(False)
                return result
            attempt += 1
            await self._sleep(wait)

    async def _attempt(self, request: TierRequest) -> Answer:
        if request.deferred and self.upstream.defers:
            completion = await self.upstream.complete_deferred(request.chat)
            return self._answer(completion, batched=True)
        if request.chat.stream:
            relay = await self.upstream.stream(
                request.chat,
                include_usage=request.include_usage,
                prompt_tokens=request.prompt_tokens,
                max_repeats=request.max_repeated_chunks,
            )
            return Answer(tier=self.name, stream=relay, upstream=self.upstream.name)
        return self._answer(await self.upstream.complete(request.chat))

    def _answer(self, completion: Completion, batched: bool = False) -> Answer:
        return Answer(
            tier=self.name,
            content=completion.content,
            usage=completion.usage,
            body=completion.body,
            upstream=self.upstream.name,
            tool_calls=completion.tool_calls,
            batched=batched,
        )
