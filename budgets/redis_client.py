"""One Redis client per worker, shared by the ledger and the cache, with timeouts on every call,
so a hung Redis costs a request at most its timeout.

The pool is the plain (non-blocking) one: the blocking pool's condition variable adds to every
call. Its bound is high enough that it is never the limit in practice
(one connection per request in flight); past it a call fails fast as a state error."""

from __future__ import annotations

import redis.asyncio as aioredis


def connect(url: str, timeout_s: float, max_connections: int = 1024) -> aioredis.Redis:
    pool = aioredis.ConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool)
