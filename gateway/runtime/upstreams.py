"""The upstreams as a worker builds them: one HTTP session, each upstream's settings and prices,
and each upstream as an LLM tier with its reliability guards."""

from __future__ import annotations

from contextlib import AsyncExitStack

import aiohttp

from budgets.policy import MICRO_USD
from budgets.tokens import TokenCounter
from gateway.config.models import GatewayConfig, UpstreamConfig
from tiers.llm.circuit import CircuitBreaker, CircuitSettings
from tiers.llm.guards import Bulkhead, RetryBudget
from tiers.llm.provider_batch import ProviderBatchSettings
from tiers.llm.tier import LLMTier, RetryPolicy
from tiers.llm.upstream import OpenAICompatibleUpstream, UpstreamSettings


def upstream_settings(upstream: UpstreamConfig) -> UpstreamSettings:
    return UpstreamSettings(
        name=upstream.name,
        base_url=upstream.base_url,
        model=upstream.model,
        api_key=upstream.api_key.get_secret_value() if upstream.api_key else None,
        timeout_s=upstream.timeout_s,
        connect_timeout_s=upstream.connect_timeout_s,
        first_token_timeout_s=upstream.first_token_timeout_s,
        max_output_tokens=upstream.max_output_tokens,
        stream_usage=upstream.stream_usage,
        headers=tuple(upstream.headers.items()),
        max_repeated_chunks=upstream.max_repeated_chunks,
        max_answer_bytes=upstream.max_answer_bytes,
        api=upstream.api,
        batches=ProviderBatchSettings(collect_s=upstream.batch_collect_s, poll_s=upstream.batch_poll_s)
        if upstream.batch_api
        else None,
    )


def micro_prices(upstream: UpstreamConfig, deferred: bool = False) -> tuple[float, float]:
    """Micro-dollars per (input, output) token; `deferred`: in a provider batch."""
    price = upstream.deferred_price() if deferred else upstream.price
    return (price.input_per_mtok * MICRO_USD / 1e6, price.output_per_mtok * MICRO_USD / 1e6)


def upstream_session(config: GatewayConfig, stack: AsyncExitStack) -> aiohttp.ClientSession:
    """One HTTP session per worker for every upstream call, closed with `stack`."""
    connector = aiohttp.TCPConnector(
        limit=sum(u.max_connections for u in config.upstreams) or 100,
        limit_per_host=0,
        keepalive_timeout=30,
        enable_cleanup_closed=True,
    )
    # No cookie jar: the session is shared by every agent, and an upstream's Set-Cookie must never
    # ride along on another agent's request.
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        raise_for_status=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    stack.push_async_callback(session.close)
    return session


def build_llm_tiers(
    config: GatewayConfig, session: aiohttp.ClientSession, counter: TokenCounter, stack: AsyncExitStack
) -> tuple[dict[str, LLMTier], dict[str, CircuitBreaker]]:
    """Each upstream as a tier, with its retries, circuit breaker, retry budget and bulkhead; its
    provider batches still gathering or running are abandoned with `stack`."""
    tiers: dict[str, LLMTier] = {}
    circuits: dict[str, CircuitBreaker] = {}
    for upstream in config.upstreams:
        client = OpenAICompatibleUpstream(upstream_settings(upstream), session, counter.count)
        stack.push_async_callback(client.close)
        retry = RetryPolicy(upstream.max_retries, upstream.retry_base_s, upstream.retry_max_s)
        breaker = CircuitBreaker(CircuitSettings(**upstream.circuit.model_dump()))
        circuits[upstream.name] = breaker
        tiers[upstream.name] = LLMTier(
            client,
            retry,
            breaker,
            RetryBudget(ratio=upstream.retry_budget),
            Bulkhead(upstream.max_concurrency, upstream.queue_timeout_s, upstream.reserve_for_critical),
        )
    return tiers, circuits
