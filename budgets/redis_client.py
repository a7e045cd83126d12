"""One Redis client per worker, shared by the ledger and the cache: a bounded, blocking pool with
timeouts on every call, so a hung Redis costs a request at most its timeout."""

from __future__ import annotations

import redis.asyncio as aioredis


def connect(url: str, timeout_s: float, max_connections: int = 64) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,  # the longest a request waits for a free connection
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool)
