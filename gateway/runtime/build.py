"""Building the running gateway from its config: clients, ledger, cache, tiers and routes, once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp

from budgets.leases import LeaseSettings, LeasingLedger
from budgets.ledger import Ledger
from budgets.memory import MemoryLedger
from budgets.policy import BudgetPolicy
from budgets.redis_client import StateClient, connect
from budgets.redis_ledger import RedisLedger
from budgets.tokens import TokenCounter, load_encoding
from gateway.approval.gate import ApprovalGate
from gateway.auth import AdminKey, AgentDirectory, key_digest
from gateway.batch.service import Batches
from gateway.cache.backends import Cache, MemoryCache, NoCache, RedisCache
from gateway.config.model_files import train_missing_models
from gateway.config.models import AgentConfig, BudgetConfig, GatewayConfig, RouteConfig
from gateway.config.rules import rule_specs
from gateway.governance.drift import DriftReference, drift_reference
from gateway.governance.shadow import ShadowClassifier
from gateway.http.wire import InputLimits
from gateway.observe.alerts import BudgetAlerts
from gateway.observe.metrics import Metrics
from gateway.observe.records import JsonLinesSink, NoSink, RecentRecords, Recorder, RecordSink, TeeSink
from gateway.pipeline.admission import Admission
from gateway.pipeline.budget import AgentBudget, BudgetStep
from gateway.pipeline.cache_lookup import CacheLookup
from gateway.pipeline.embeddings import EmbeddingsPath
from gateway.pipeline.loops import LoopGuard, LoopLimits
from gateway.pipeline.request_path import RequestPath
from gateway.pipeline.routes import ComplexityRouting, ResolvedRoute, RouteTable, UpstreamOption
from gateway.pipeline.settlement import Records
from gateway.runtime.governance import Governance, build_governance
from gateway.runtime.services import (
    asks_approval,
    build_approvals,
    build_batches,
    build_embeddings,
    share_circuits,
)
from gateway.runtime.upstreams import build_llm_tiers, micro_prices, upstream_session
from gateway.store.runtime import StoreRuntime
from routing.complexity import ComplexityScorer, HeuristicScorer
from routing.ladder import Ladder
from routing.learned_router import LearnedScorer
from tiers.base import Tier
from tiers.classifier.embeddings import StaticEmbeddings
from tiers.classifier.model import ClassifierModel, Predictor
from tiers.classifier.tier import ClassifierTier
from tiers.llm.circuit import CircuitBreaker
from tiers.llm.guards import Bulkhead
from tiers.rules import RulesTier


class Activity:
    """Requests in flight on one gateway, so a replaced gateway closes only once they are done."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


log = logging.getLogger("tiergate")


@dataclass(frozen=True, slots=True)
class Gateway:
    """Everything the HTTP layer hands requests to; built once per worker in the lifespan."""

    config: GatewayConfig
    chat: RequestPath
    embeddings: EmbeddingsPath
    agents: AgentDirectory
    admin: AdminKey
    limits: InputLimits
    ledger: Ledger
    cache: Cache
    recent: RecentRecords
    counter: TokenCounter
    metrics: Metrics
    circuits: dict[str, CircuitBreaker]
    activity: Activity
    agent_slots: dict[str, Bulkhead]
    store: StoreRuntime | None
    governance: Governance
    approvals: ApprovalGate | None
    batches: Batches | None


def policy_of(subject: str, budget: BudgetConfig) -> BudgetPolicy:
    return BudgetPolicy.build(
        subject,
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
        policies = [policy_of(s, b) for s, b in budget_subjects(config, agent)]
        facts[agent.id] = AgentBudget(
            limited=any(limit.metric != "requests" for policy in policies for limit in policy.limits),
            default_completion_tokens=agent.budget.default_completion_tokens,
            fail_open=config.state.on_state_error == "fail_open",
            downgrade=agent.budget.on_exhausted == "downgrade",
            has_limits=any(policy.limits for policy in policies),
            wait_s=agent.budget.wait_s,
            keep_for_critical=agent.budget.reserve_for_critical,
            max_waiting=agent.budget.max_waiting,
            recent=(agent.budget.recent_percentile, agent.budget.recent_margin)
            if agent.budget.reserve == "recent"
            else None,
        )
    return facts


def budget_subjects(config: GatewayConfig, agent: AgentConfig) -> list[tuple[str, BudgetConfig]]:
    """Whose budgets a request of this agent draws on: its own, and its team's if it has one."""
    subjects = [(f"agent:{agent.id}", agent.budget)]
    team = config.team(agent.team) if agent.team else None
    if team is not None:
        subjects.append((f"team:{team.id}", team.budget))
    return subjects


def build_ledger(config: GatewayConfig, redis: StateClient | None) -> Ledger:
    policies: dict[str, BudgetPolicy] = {}
    subjects: dict[str, tuple[str, ...]] = {}
    for agent in config.agents:
        pairs = budget_subjects(config, agent)
        for subject, budget in pairs:
            policies[subject] = policy_of(subject, budget)
        subjects[agent.id] = tuple(subject for subject, _ in pairs)
    if redis is None:
        return MemoryLedger(policies, subjects)
    tags = {a.id: f"team:{a.team}" if a.team else f"agent:{a.id}" for a in config.agents}
    ledger = RedisLedger(redis, policies, subjects, tags)
    leases = config.state.leases
    if not leases.enabled:
        return ledger
    limited = {a: s for a, s in subjects.items() if any(policies[subject].limits for subject in s)}
    settings = LeaseSettings(leases.ttl_s, leases.share, leases.min_requests)
    return LeasingLedger(ledger, limited, settings)


def build_cache(config: GatewayConfig, state_redis: StateClient | None) -> Cache:
    if config.cache.backend == "memory":
        return MemoryCache(config.cache.max_entries)
    if config.cache.backend == "redis":
        if config.cache.url and config.cache.url != config.state.url:
            return RedisCache(
                connect(config.cache.url, config.state.timeout_s, cluster=config.state.cluster),
                owns_client=True,
            )
        if state_redis is None:
            state_redis = connect(
                config.state.url or "", config.state.timeout_s, cluster=config.state.cluster
            )
            return RedisCache(state_redis, owns_client=True)
        return RedisCache(state_redis, owns_client=False)
    return NoCache()


def build_sink(config: GatewayConfig) -> RecordSink:
    if config.records.sink == "stdout":
        return JsonLinesSink.to_stdout()
    if config.records.sink == "file" and config.records.path:
        return JsonLinesSink.to_file(config.records.path)
    return NoSink()


def load_classifiers(config: GatewayConfig) -> tuple[dict[str, Tier], dict[str, DriftReference]]:
    """Each route's classifier, loaded once at start-up; a missing or stale model stops start-up
    (unless the route names rows to train it from)."""
    train_missing_models(config)
    loaded: dict[str, ClassifierModel] = {}
    embeddings: dict[str, StaticEmbeddings] = {}  # one copy of each, whatever the routes
    tiers: dict[str, Tier] = {}
    references: dict[str, DriftReference] = {}
    for route in config.routes:
        if route.classifier is None:
            continue
        path = route.classifier.model
        if path not in loaded:
            loaded[path] = ClassifierModel.load(path)
        model = loaded[path]
        shared = None
        if model.embeddings is not None:
            source = str(model.embeddings["source"])
            if source not in embeddings:
                embeddings[source] = StaticEmbeddings.load(source)
            shared = embeddings[source]
        tiers[route.name] = ClassifierTier(Predictor(model, route.classifier.min_confidence, shared))
        reference = drift_reference(model)
        if reference is not None:
            references[route.name] = reference
    return tiers, references


def build_routes(
    config: GatewayConfig, upstream_tiers: Mapping[str, Tier], classifiers: dict[str, Tier]
) -> RouteTable:
    routes: dict[str, ResolvedRoute] = {}

    def resolved(
        name: str, ladder_names: list[str], first: Sequence[Tier] = (), **extra: Any
    ) -> ResolvedRoute:
        upstreams = [u for u in config.upstreams if u.name in ladder_names]
        prices = [micro_prices(u) for u in upstreams]
        limits = [u.max_output_tokens for u in upstreams]
        options = sorted(
            (UpstreamOption(u.name, upstream_tiers[u.name], *micro_prices(u)) for u in upstreams),
            key=lambda o: (o.output_micro_usd, o.input_micro_usd),
        )
        return ResolvedRoute(
            name=name,
            ladder=Ladder([*first, *(upstream_tiers[n] for n in ladder_names)]),
            free_tiers=tuple(first),
            cheapest_first=tuple(options),
            input_micro_usd=max((p[0] for p in prices), default=0.0),
            output_micro_usd=max((p[1] for p in prices), default=0.0),
            max_output_tokens=None if None in limits or not limits else max(x for x in limits if x),
            deferrable=any(u.name == ladder_names[0] and u.batch_api for u in upstreams),
            **extra,
        )

    for upstream in config.upstreams:
        routes[upstream.name] = resolved(upstream.name, [upstream.name])
    for route in config.routes:
        if not (route.rules or route.classifier or route.llm):
            continue  # embeddings only
        first: list[Tier] = [RulesTier(rule_specs(route))] if route.rules else []
        if route.classifier is not None:
            first.append(classifiers[route.name])
        routes[route.name] = resolved(
            route.name,
            list(route.llm),
            first,
            cache=route.cache,
            output_schema=route.output_schema,
            complexity=_complexity(route, upstream_tiers),
            repair=route.repair,
            shadow=_shadow(route),
        )
    return RouteTable(routes, frozenset(r.name for r in config.routes if r.name not in routes))


def _complexity(route: RouteConfig, upstream_tiers: Mapping[str, Tier]) -> ComplexityRouting | None:
    """The route's complexity skip of its smaller LLMs, if it has one."""
    if route.complexity is None or len(route.llm) < 2:
        return None
    scorer: ComplexityScorer = (
        LearnedScorer(ClassifierModel.load(route.complexity.router_model))
        if route.complexity.router_model
        else HeuristicScorer()
    )
    smaller = tuple(upstream_tiers[n].name for n in route.llm[:-1])
    return ComplexityRouting(scorer, route.complexity.large_above, smaller)


def _shadow(route: RouteConfig) -> ShadowClassifier | None:
    """The route's candidate classifier, scored beside it and never served."""
    if route.classifier is None or route.classifier.shadow is None:
        return None
    candidate = ClassifierModel.load(route.classifier.shadow)
    vectors = StaticEmbeddings.load(str(candidate.embeddings["source"])) if candidate.embeddings else None
    return ShadowClassifier(Predictor(candidate, None, vectors))


def input_limits(config: GatewayConfig) -> InputLimits:
    server = config.server
    return InputLimits(server.max_body_bytes, server.max_messages, server.max_total_chars)


def build_alerts(
    config: GatewayConfig, metrics: Metrics, session: aiohttp.ClientSession, stack: AsyncExitStack
) -> BudgetAlerts:
    alerts = BudgetAlerts(metrics, session, config.budget_alerts.webhook_url, config.budget_alerts.timeout_s)
    stack.push_async_callback(alerts.close)
    return alerts


def admin_key(config: GatewayConfig) -> AdminKey:
    admin = config.server.admin_key
    return AdminKey(key_digest(admin.get_secret_value()) if admin else None)


def watch_store(metrics: Metrics, store: StoreRuntime) -> None:
    """The spool's and the shipper's readings reach the metrics after each shipping pass."""
    store.shipper.on_report = lambda: metrics.store.readings(store.spool, store.shipper.stats)
    store.shipper.on_report()


def build_budget_step(config: GatewayConfig, ledger: Ledger, alerts: BudgetAlerts) -> BudgetStep:
    """The budget stage every request path shares (so a settle wakes whoever waits for room)."""
    return BudgetStep(
        ledger,
        budget_facts(config),
        alerts,
        {u.name: micro_prices(u) for u in config.upstreams},
        {u.name: micro_prices(u, deferred=True) for u in config.upstreams if u.batch_api},
    )


def build_request_path(
    config: GatewayConfig,
    routes: RouteTable,
    budget: BudgetStep,
    cache: Cache,
    counter: TokenCounter,
    records: Records,
    metrics: Metrics,
    governance: Governance | None = None,
    approvals: ApprovalGate | None = None,
) -> RequestPath:
    agents = config.agents
    return RequestPath(
        admission=Admission(
            routes,
            LoopGuard(lambda agent, kind: metrics.loops_stopped.labels(agent, kind).inc()),
            {a.id: LoopLimits(a.loops.max_repeats, a.loops.window_s, a.loops.max_steps) for a in agents},
        ),
        budget=budget,
        cache=CacheLookup(cache, config.cache),
        counter=counter,
        records=records,
        audits=governance.audits if governance is not None else None,
        paused=governance.governor if governance is not None else None,
        approvals=approvals if approvals is not None and asks_approval(config) else None,
    )


async def build_state(
    config: GatewayConfig, stack: AsyncExitStack, previous: Gateway | None
) -> tuple[Ledger, Cache]:
    """The budget ledger and the cache; in memory, they carry over from the `previous` gateway."""
    redis = None
    if config.state.backend == "redis" and config.state.url:
        redis = connect(config.state.url, config.state.timeout_s, cluster=config.state.cluster)
        stack.push_async_callback(redis.aclose)
    ledger = build_ledger(config, redis)
    if (
        previous is not None
        and isinstance(ledger, MemoryLedger)
        and isinstance(previous.ledger, MemoryLedger)
    ):
        ledger.carry_over(previous.ledger)
    if isinstance(ledger, RedisLedger | LeasingLedger):
        await ledger.load_scripts()  # before the first burst, on every node of a cluster
        stack.push_async_callback(ledger.close)  # settlements still owed, before the client closes
    cache = build_cache(config, redis)
    if previous is not None and isinstance(cache, MemoryCache) and isinstance(previous.cache, MemoryCache):
        cache = previous.cache
    stack.push_async_callback(cache.close)
    return ledger, cache


async def build_records_sink(
    config: GatewayConfig, stack: AsyncExitStack, store: StoreRuntime | None
) -> tuple[RecordSink, StoreRuntime | None]:
    """Where decision records go: the configured sink and, with a store, the worker's spool."""
    sink = build_sink(config)
    stack.callback(sink.close)
    if store is None and config.store is not None:
        store = await StoreRuntime.open(config.store)
        stack.push_async_callback(store.close)
    if store is not None:
        sink = store.spool if isinstance(sink, NoSink) else TeeSink(sink, store.spool)
    return sink, store


async def build_gateway(
    config: GatewayConfig,
    stack: AsyncExitStack,
    previous: Gateway | None = None,
    store: StoreRuntime | None = None,
) -> Gateway:
    """Create every client and component; `stack` closes them when the worker stops. On a reload,
    in-memory budgets and cache carry over from the `previous` gateway, so a reload never
    forgets what was spent. The decision `store` outlives reloads (the holder owns it); without
    one, a configured store is opened here and closed with `stack`."""
    counter = TokenCounter(load_encoding(config.tokenizer.encoding))
    session = upstream_session(config, stack)
    tiers, circuits = build_llm_tiers(config, session, counter, stack)
    await share_circuits(config, circuits, stack)
    ledger, cache = await build_state(config, stack, previous)
    sink, store = await build_records_sink(config, stack, store)
    recent = RecentRecords(config.records.keep_last)
    classifiers, references = load_classifiers(config)
    routes = build_routes(config, tiers, classifiers)
    metrics = Metrics(circuits, routes.routes)
    if store is not None:
        watch_store(metrics, store)
    alerts = build_alerts(config, metrics, session, stack)
    records = Records(Recorder(recent, sink, metrics.observe), config.records.redact)
    governance = build_governance(
        config,
        tiers,
        classifiers,
        references,
        store,
        alerts,
        metrics,
        stack,
        previous.governance if previous is not None else None,
    )
    approvals = build_approvals(config, store, session, stack)
    budget = build_budget_step(config, ledger, alerts)
    chat = build_request_path(config, routes, budget, cache, counter, records, metrics, governance, approvals)
    activity = Activity()
    limits = input_limits(config)
    return Gateway(
        config=config,
        chat=chat,
        embeddings=build_embeddings(config, tiers, budget, cache, counter, records, limits),
        agents=AgentDirectory.of(config.agents),
        admin=admin_key(config),
        limits=limits,
        ledger=ledger,
        cache=cache,
        recent=recent,
        counter=counter,
        metrics=metrics,
        circuits=circuits,
        activity=activity,
        agent_slots={a.id: Bulkhead(a.max_concurrency, a.queue_timeout_s) for a in config.agents},
        store=store,
        governance=governance,
        approvals=approvals,
        batches=build_batches(config, store, chat, routes, limits, stack, lambda: activity.in_flight > 0),
    )
