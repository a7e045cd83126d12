"""POSTing events to a webhook: in the background, bounded by a timeout, never delaying a request;
a failure is logged and the event dropped."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import msgspec

log = logging.getLogger("tiergate")


class Webhook:
    def __init__(self, session: aiohttp.ClientSession, url: str | None, timeout_s: float, name: str) -> None:
        self._session = session
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._name = name
        self._pending: set[asyncio.Task[None]] = set()

    def post(self, event: msgspec.Struct) -> None:
        """POST one event, in the background (when there is a webhook)."""
        if self._url is not None:
            task = asyncio.ensure_future(self._post(self._url, event))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _post(self, url: str, event: msgspec.Struct) -> None:
        try:
            async with self._session.post(
                url,
                data=msgspec.json.encode(event),
                headers={"content-type": "application/json"},
                timeout=self._timeout,
            ) as response:
                if response.status >= 300:
                    log.warning("%s webhook answered %d", self._name, response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("%s webhook failed: %s", self._name, type(exc).__name__)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=2)
