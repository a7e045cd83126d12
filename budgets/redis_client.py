"""One Redis client per worker, shared by the ledger and the cache, with timeouts on every call,
so a hung Redis costs a request at most its timeout.

The pool is the plain (non-blocking) one: the blocking pool's condition variable adds to every
call. Its bound is high enough that it is never the limit in practice
(one connection per request in flight); past it a call fails fast as a state error."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

StateClient = aioredis.Redis | RedisCluster
CLUSTER_SCHEME = "redis+cluster://"


def is_cluster(url: str, cluster: bool = False) -> bool:
    return cluster or url.startswith(CLUSTER_SCHEME)


def connect(url: str, timeout_s: float, max_connections: int = 1024, cluster: bool = False) -> StateClient:
    """A client of one Redis, or of a Redis Cluster (`cluster`, or a `redis+cluster://` URL: any
    node's address; the client finds the others). Every key a script touches carries one hash tag,
    so each script runs on one node."""
    if is_cluster(url, cluster):
        return RedisCluster.from_url(
            "redis://" + url.removeprefix(CLUSTER_SCHEME).removeprefix("redis://"),
            max_connections=max_connections,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
    pool = aioredis.ConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool)
