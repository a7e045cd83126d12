"""Hot reload: a worker's running gateway is rebuilt from the re-read config and swapped in; the
old one keeps serving the requests it has and is closed once they finish. An invalid config is
refused with its problems logged, and the old one stays.

A serving process also freezes its heap (`freeze_heap`) once a gateway is built: everything it
loaded (a classifier's vocabularies, token ranks, config) moves out of the garbage collector's
reach, so the collector's full passes no longer walk them (much shorter pauses with a large
model loaded). When a reload retires a gateway, the heap is unfrozen, collected (freeing the old
gateway) and frozen again."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

from gateway.config.loading import ConfigError
from gateway.config.models import GatewayConfig
from gateway.runtime.build import Gateway, build_gateway
from gateway.store.protocol import Event
from gateway.store.runtime import StoreRuntime

log = logging.getLogger("tiergate")


class GatewayHolder:
    def __init__(
        self,
        config: GatewayConfig,
        load: Callable[[], GatewayConfig] | None,
        grace_s: float,
        freeze_heap: bool = False,
    ) -> None:
        self._config = config
        self._load = load
        self._grace_s = grace_s
        self._freeze_heap = freeze_heap
        self._stack = AsyncExitStack()
        self._retiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._store: StoreRuntime | None = None
        self.current: Gateway

    async def start(self) -> None:
        if self._config.store is not None:
            self._store = await StoreRuntime.open(self._config.store)
        self.current = await build_gateway(self._config, self._stack, store=self._store)
        self._settle_heap()

    def _settle_heap(self) -> None:
        if self._freeze_heap:
            gc.unfreeze()  # what an earlier freeze kept, a retired gateway included, is looked at again
            gc.collect()
            gc.freeze()

    def check(self) -> GatewayConfig:
        """The config as it now reads; raises ConfigError when it cannot be used."""
        if self._load is None:
            raise ConfigError("<config>", ["this gateway was started without a config file to re-read"])
        return self._load()

    async def reload(self) -> list[str]:
        """Swap in a gateway built from the re-read config; returns the problems if it is invalid."""
        async with self._lock:
            try:
                config = self.check()
            except ConfigError as exc:
                log.error("reload refused, keeping the running config: %s", "; ".join(exc.problems))
                return exc.problems
            if config.store != self._config.store:
                problem = "the store's settings change only at a restart"
                log.error("reload refused, keeping the running config: %s", problem)
                return [problem]
            stack = AsyncExitStack()
            try:
                gateway = await build_gateway(config, stack, previous=self.current, store=self._store)
            except Exception as exc:
                await stack.aclose()
                log.error("reload refused, keeping the running config: %s", exc)
                return [str(exc)]
            old, old_stack = self.current, self._stack
            await self._record_promotions(self._config, config)
            self.current, self._stack, self._config = gateway, stack, config
            task = asyncio.ensure_future(self._retire(old, old_stack))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            log.warning("config reloaded")
            return []

    async def _record_promotions(self, old: GatewayConfig, new: GatewayConfig) -> None:
        """A route whose classifier model changed (a shadow promoted, say) is an event."""
        if self._store is None:
            return
        for route in new.routes:
            before = old.route(route.name)
            was = before.classifier.model if before is not None and before.classifier else None
            now = route.classifier.model if route.classifier else None
            if was != now:
                event = Event(
                    time=time.time(),
                    kind="classifier.promoted",
                    route=route.name,
                    detail={"from": was, "to": now},
                )
                log.warning("route %r now classifies with %s (was %s)", route.name, now, was)
                try:
                    await self._store.store.add_event(event)
                except Exception as exc:
                    log.error("the promotion of %r was not recorded: %s", route.name, exc)

    async def _retire(self, old: Gateway, stack: AsyncExitStack) -> None:
        try:
            await asyncio.wait_for(old.activity.idle(), self._grace_s)
        except TimeoutError:
            log.warning(
                "closing the previous config with requests still in flight after %.0fs", self._grace_s
            )
        await stack.aclose()
        del old
        self._settle_heap()

    async def close(self) -> None:
        for task in list(self._retiring):
            await task
        await self._stack.aclose()
        if self._store is not None:
            await self._store.close()
