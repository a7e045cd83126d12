"""Building the running gateway from its config: clients, ledger, cache, tiers and routes, once."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

import aiohttp

from budgets.ledger import Ledger
from budgets.memory import MemoryLedger
from budgets.policy import MICRO_USD, BudgetPolicy
from budgets.tokens import TokenCounter, load_encoding
from gateway.auth import AdminKey, AgentDirectory, key_digest
from gateway.cache import Cache, MemoryCache, NoCache
from gateway.chat import AgentBudget, ChatService
from gateway.config import AgentConfig, GatewayConfig, UpstreamConfig
from gateway.records import JsonLinesSink, NoSink, RecentRecords, RecordSink
from gateway.route_table import ResolvedRoute, RouteTable
from gateway.wire import InputLimits
from routing.ladder import Ladder
from tiers.base import Tier
from tiers.llm import LLMTier, RetryPolicy
from tiers.upstream import OpenAICompatibleUpstream, UpstreamSettings


@dataclass(frozen=True, slots=True)
class Gateway:
    """Everything the HTTP layer hands requests to; built once per worker in the lifespan."""

    config: GatewayConfig
    chat: ChatService
    agents: AgentDirectory
    admin: AdminKey
    limits: InputLimits
    ledger: Ledger
    cache: Cache
    recent: RecentRecords
    counter: TokenCounter


def agent_policy(agent: AgentConfig) -> BudgetPolicy:
    budget = agent.budget
    return BudgetPolicy.build(
        f"agent:{agent.id}",
        tokens={
            "minute": budget.tokens_per_minute,
            "hour": budget.tokens_per_hour,
            "day": budget.tokens_per_day,
            "month": budget.tokens_per_month,
        },
        usd={"day": budget.usd_per_day, "month": budget.usd_per_month},
        requests_per_minute=budget.requests_per_minute,
        on_exhausted=budget.on_exhausted,
        warn_at=budget.warn_at,
    )


def budget_facts(config: GatewayConfig) -> dict[str, AgentBudget]:
    facts = {}
    for agent in config.agents:
        policy = agent_policy(agent)
        facts[agent.id] = AgentBudget(
            limited=any(limit.metric != "requests" for limit in policy.limits),
            default_completion_tokens=agent.budget.default_completion_tokens,
            fail_open=config.state.on_state_error == "fail_open",
        )
    return facts


def build_ledger(config: GatewayConfig) -> Ledger:
    policies = {f"agent:{a.id}": agent_policy(a) for a in config.agents}
    subjects = {a.id: (f"agent:{a.id}",) for a in config.agents}
    return MemoryLedger(policies, subjects)


def build_cache(config: GatewayConfig) -> Cache:
    if config.cache.backend == "memory":
        return MemoryCache(config.cache.max_entries, config.cache.ttl_s)
    return NoCache()


def build_sink(config: GatewayConfig) -> RecordSink:
    if config.records.sink == "stdout":
        return JsonLinesSink.to_stdout()
    if config.records.sink == "file" and config.records.path:
        return JsonLinesSink.to_file(config.records.path)
    return NoSink()


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
    )


def micro_prices(upstream: UpstreamConfig) -> tuple[float, float]:
    return (
        upstream.price.input_per_mtok * MICRO_USD / 1e6,
        upstream.price.output_per_mtok * MICRO_USD / 1e6,
    )


def build_routes(config: GatewayConfig, tiers: dict[str, Tier]) -> RouteTable:
    routes: dict[str, ResolvedRoute] = {}

    def resolved(name: str, ladder_names: list[str], **extra: object) -> ResolvedRoute:
        upstreams = [u for u in config.upstreams if u.name in ladder_names]
        prices = [micro_prices(u) for u in upstreams]
        limits = [u.max_output_tokens for u in upstreams]
        return ResolvedRoute(
            name=name,
            ladder=Ladder([tiers[n] for n in ladder_names]),
            input_micro_usd=max((p[0] for p in prices), default=0.0),
            output_micro_usd=max((p[1] for p in prices), default=0.0),
            max_output_tokens=None if None in limits or not limits else max(x for x in limits if x),
            **extra,  # type: ignore[arg-type]
        )

    for upstream in config.upstreams:
        routes[upstream.name] = resolved(upstream.name, [upstream.name])
    for route in config.routes:
        routes[route.name] = resolved(
            route.name, list(route.llm), cache=route.cache, output_schema=route.output_schema
        )
    return RouteTable(routes)


async def build_gateway(config: GatewayConfig, stack: AsyncExitStack) -> Gateway:
    """Create every client and component; `stack` closes them when the worker stops."""
    counter = TokenCounter(load_encoding(config.tokenizer.encoding))
    connector = aiohttp.TCPConnector(
        limit=sum(u.max_connections for u in config.upstreams) or 100,
        limit_per_host=0,
        keepalive_timeout=30,
        enable_cleanup_closed=True,
    )
    session = aiohttp.ClientSession(connector=connector, auto_decompress=True, raise_for_status=False)
    stack.push_async_callback(session.close)
    tiers: dict[str, Tier] = {}
    for upstream in config.upstreams:
        client = OpenAICompatibleUpstream(upstream_settings(upstream), session, counter.count)
        retry = RetryPolicy(upstream.max_retries, upstream.retry_base_s, upstream.retry_max_s)
        tiers[upstream.name] = LLMTier(client, retry)
    ledger = build_ledger(config)
    stack.push_async_callback(ledger.close)
    cache = build_cache(config)
    stack.push_async_callback(cache.close)
    sink = build_sink(config)
    stack.callback(sink.close)
    recent = RecentRecords(config.records.keep_last)
    chat = ChatService(
        routes=build_routes(config, tiers),
        ledger=ledger,
        budgets=budget_facts(config),
        cache=cache,
        cache_config=config.cache,
        counter=counter,
        sink=sink,
        recent=recent,
        redact=config.records.redact,
        prices={u.name: micro_prices(u) for u in config.upstreams},
    )
    admin = config.server.admin_key
    return Gateway(
        config=config,
        chat=chat,
        agents=AgentDirectory.of(config.agents),
        admin=AdminKey(key_digest(admin.get_secret_value()) if admin else None),
        limits=InputLimits(
            config.server.max_body_bytes, config.server.max_messages, config.server.max_total_chars
        ),
        ledger=ledger,
        cache=cache,
        recent=recent,
        counter=counter,
    )
