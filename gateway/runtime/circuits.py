"""Circuit state shared through Redis (with `state.backend: redis`): one worker's discovery that an
upstream fails protects every worker of every gateway on that Redis.

A breaker that opens publishes its cool-down on a channel, and keeps it in a key that expires with
it (so a worker that starts later learns of it); every other worker opens its own breaker for the
rest of it. A successful probe publishes the close. A closed circuit costs no Redis round trip:
requests only read the worker's own breaker. Each worker probes once its own cool-down ends, so a
fleet may send one probe per worker, not one in all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping

import msgspec
import redis.asyncio as aioredis

from budgets.redis_client import StateClient
from tiers.llm.circuit import CircuitBreaker

log = logging.getLogger("tiergate")


class CircuitNews(msgspec.Struct, frozen=True):
    upstream: str
    origin: str
    open_s: float | None  # None: closed again


class SharedCircuits:
    def __init__(self, client: StateClient, prefix: str, breakers: Mapping[str, CircuitBreaker]) -> None:
        self._client = client
        self._channel = f"{prefix}:circuits"
        self._prefix = prefix
        self._breakers = breakers
        self._origin = secrets.token_hex(8)
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None

    def _key(self, upstream: str) -> str:
        return f"{self._prefix}:circuit:{{{upstream}}}:open_until"

    async def start(self) -> None:
        """Learn of circuits open now, then follow every change; tell of this worker's own."""
        for name, breaker in self._breakers.items():
            breaker.on_change = lambda seconds, name=name: self._tell(name, seconds)  # type: ignore[misc]
        with contextlib.suppress(Exception):  # Redis down: the breakers work alone meanwhile
            for name, breaker in self._breakers.items():
                until = await self._client.get(self._key(name))
                if until is not None and float(until) > time.time():
                    breaker.opened_elsewhere(float(until) - time.time())
        pubsub = self._client.pubsub()
        await pubsub.subscribe(self._channel)
        self._listener = asyncio.create_task(self._listen(pubsub), name="tiergate-circuits")

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    news = msgspec.json.decode(message["data"], type=CircuitNews)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                breaker = self._breakers.get(news.upstream)
                if breaker is None or news.origin == self._origin:
                    continue
                if news.open_s is None:
                    breaker.closed_elsewhere()
                else:
                    breaker.opened_elsewhere(news.open_s)
                    log.warning("upstream %r: circuit opened elsewhere for %.0fs", news.upstream, news.open_s)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _tell(self, upstream: str, open_s: float | None) -> None:
        task = asyncio.ensure_future(self._publish(upstream, open_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, upstream: str, open_s: float | None) -> None:
        news = msgspec.json.encode(CircuitNews(upstream, self._origin, open_s))
        try:
            if open_s is None:
                await self._client.delete(self._key(upstream))
            else:
                until = time.time() + open_s
                await self._client.set(self._key(upstream), repr(until), px=max(1, int(open_s * 1000)))
            await self._client.publish(self._channel, news)
        except Exception as exc:  # the others find out by themselves
            log.warning("could not share the circuit of %r: %s", upstream, type(exc).__name__)

    async def close(self) -> None:
        for breaker in self._breakers.values():
            breaker.on_change = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
