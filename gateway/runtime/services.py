"""A worker's services beside the request path, each built from the config when it asks for
it: the approval stage and its expiry, the batch runner, and circuit state shared through Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack

import aiohttp

from budgets.redis_client import connect
from budgets.tokens import TokenCounter
from gateway.approval.gate import ApprovalGate
from gateway.batch.files import FileKeeper, files_directory
from gateway.batch.runner import BatchRunner
from gateway.batch.service import Batches
from gateway.batch.store import SqlBatchStore
from gateway.cache.backends import Cache
from gateway.cache.flight import ResponseCache
from gateway.config.models import GatewayConfig
from gateway.http.wire import InputLimits
from gateway.observe.webhook import Webhook
from gateway.pipeline.budget import BudgetStep
from gateway.pipeline.embeddings import Embedder, EmbeddingsPath, embedding_routes
from gateway.pipeline.request_path import RequestPath
from gateway.pipeline.routes import RouteTable
from gateway.pipeline.settlement import Records
from gateway.runtime.circuits import SharedCircuits
from gateway.runtime.upstreams import micro_prices
from gateway.store.approvals import SqlApprovals
from gateway.store.runtime import StoreRuntime
from tiers.llm.circuit import CircuitBreaker

log = logging.getLogger("tiergate")


def cancelled_with(stack: AsyncExitStack, task: asyncio.Task[None]) -> None:
    """`task` runs until `stack` closes."""

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)


def asks_approval(config: GatewayConfig) -> bool:
    """Whether any route or agent has an approval policy."""
    return any(r.approval is not None for r in config.routes) or any(
        p is not None for a in config.agents for p in a.approval.values()
    )


def build_approvals(
    config: GatewayConfig,
    store: StoreRuntime | None,
    session: aiohttp.ClientSession,
    stack: AsyncExitStack,
) -> ApprovalGate | None:
    """The approval stage and its expiry task (approvals live in the store: none without one)."""
    if store is None:
        return None
    webhook = Webhook(session, config.approvals.webhook_url, config.approvals.timeout_s, "approvals")
    stack.push_async_callback(webhook.close)
    gate = ApprovalGate(
        SqlApprovals(store.store.engine),
        store.store,
        config.approvals,
        {r.name: r for r in config.routes},
        {a.id: a for a in config.agents},
        webhook,
    )
    if asks_approval(config):
        cancelled_with(stack, asyncio.create_task(gate.expire_forever(), name="tiergate-approval-expiry"))
    return gate


async def share_circuits(
    config: GatewayConfig, circuits: dict[str, CircuitBreaker], stack: AsyncExitStack
) -> None:
    """With Redis state, every worker's breakers hear of each other's openings and closes."""
    if config.state.backend != "redis" or not config.state.url:
        return
    # a client of its own: following the channel waits longer than the state calls' timeout
    client = connect(config.state.url, 30.0, max_connections=8, cluster=config.state.cluster)
    stack.push_async_callback(client.aclose)
    shared = SharedCircuits(client, "tg", circuits)
    try:
        await shared.start()
    except Exception as exc:  # Redis down at start: each breaker works alone
        log.error("circuit state cannot be shared through Redis: %s", exc)
        return
    stack.push_async_callback(shared.close)


def build_batches(
    config: GatewayConfig,
    store: StoreRuntime | None,
    chat: RequestPath,
    routes: RouteTable,
    limits: InputLimits,
    stack: AsyncExitStack,
    busy: Callable[[], bool],
) -> Batches | None:
    """The Batch API and this worker's runner (batches live in the store: none without one)."""
    if store is None or config.store is None:
        return None
    batch_store = SqlBatchStore(store.store.engine)
    files = FileKeeper(files_directory(config.batch.files_dir, config.store.url))
    agents = {a.id: a for a in config.agents}
    runner = BatchRunner(batch_store, files, chat, routes, agents, config.batch, limits, busy=busy)
    stack.push_async_callback(runner.stop)  # after the task is cancelled: its lines go back
    cancelled_with(stack, asyncio.create_task(runner.run(), name="tiergate-batches"))
    return Batches(batch_store, files, runner, config.batch, limits)


def build_embeddings(
    config: GatewayConfig,
    upstreams: Mapping[str, Embedder],
    budget: BudgetStep,
    cache: Cache,
    counter: TokenCounter,
    records: Records,
    limits: InputLimits,
) -> EmbeddingsPath:
    """The embeddings request path: the routes that list embedding upstreams, sharing the chat
    path's budget stage and cache; each upstream called through its LLM tier, so its retries,
    circuit breaker and place limit apply to embeddings too."""
    routes = embedding_routes(
        {r.name: r.embeddings for r in config.routes if r.embeddings},
        upstreams,
        {u.name: micro_prices(u)[0] for u in config.upstreams},
        {r.name for r in config.routes if r.cache.enabled},
    )
    return EmbeddingsPath(
        routes,
        budget,
        ResponseCache(cache, config.cache.ttl_s),
        config.cache.wait_s,
        config.cache.scope,
        counter,
        records,
        limits,
    )
