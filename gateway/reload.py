"""Hot reload: a worker's running gateway is rebuilt from the re-read config and swapped in; the
old one keeps serving the requests it has and is closed once they finish. An invalid config is
refused with its problems logged, and the old one stays."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack

from gateway.assembly import Gateway, build_gateway
from gateway.config import GatewayConfig
from gateway.config_loading import ConfigError

log = logging.getLogger("tiergate")


class GatewayHolder:
    def __init__(
        self, config: GatewayConfig, load: Callable[[], GatewayConfig] | None, grace_s: float
    ) -> None:
        self._config = config
        self._load = load
        self._grace_s = grace_s
        self._stack = AsyncExitStack()
        self._retiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self.current: Gateway

    async def start(self) -> None:
        self.current = await build_gateway(self._config, self._stack)

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
            stack = AsyncExitStack()
            try:
                gateway = await build_gateway(config, stack, previous=self.current)
            except Exception as exc:
                await stack.aclose()
                log.error("reload refused, keeping the running config: %s", exc)
                return [str(exc)]
            old, old_stack = self.current, self._stack
            self.current, self._stack = gateway, stack
            task = asyncio.ensure_future(self._retire(old, old_stack))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            log.warning("config reloaded")
            return []

    async def _retire(self, old: Gateway, stack: AsyncExitStack) -> None:
        try:
            await asyncio.wait_for(old.activity.idle(), self._grace_s)
        except TimeoutError:
            log.warning(
                "closing the previous config with requests still in flight after %.0fs", self._grace_s
            )
        await stack.aclose()

    async def close(self) -> None:
        for task in list(self._retiring):
            await task
        await self._stack.aclose()
