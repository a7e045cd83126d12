"""The shipper: moves spooled records to the store in batches (each worker runs one in a process
of its own, gateway/store/shipper_process.py).

It ships one worker's spool, and the spool of any worker that died (its lock is free), so records
spooled before a SIGKILL reach the store after a restart. While the store is down or slow the
spool grows and requests go on as before; a log line marks each change between reachable and not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gateway.store.batches import ship_batch
from gateway.store.engine import sqlite_path
from gateway.store.protocol import Store
from gateway.store.spool import DeadWriter, Segment, segments, writer_of

log = logging.getLogger("tiergate")

PRUNE_EVERY_S = 3600.0
MAX_BACKOFF_S = 5.0


class Spool(Protocol):
    """The spool a shipper ships: one writer's segments in a directory."""

    directory: Path
    name: str  # the writer's

    @property
    def current(self) -> Path | None:
        """The segment being written (not to be removed once shipped); None once writing stopped."""
        ...

    def shipped(self, size: int) -> None:
        """`size` more bytes of the writer's records are in the store."""
        ...


class ShipperStats:
    def __init__(self) -> None:
        self.shipped = 0
        self.torn = 0  # lines that could not be read (a write cut short by a crash)
        self.store_up = True


class Shipper:
    def __init__(
        self,
        store: Store,
        writer: Spool,
        interval_s: float,
        batch: int,
        retention_s: float,
    ) -> None:
        self._store = store
        self._writer = writer
        self._directory = writer.directory
        self._interval_s = interval_s
        self._batch = batch
        self._retention_s = retention_s
        self._pruned_at = 0.0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.stats = ShipperStats()

    async def run(self, after_pass: Callable[[], None] = lambda: None) -> None:
        delay = self._interval_s
        while True:
            delay = self._interval_s if await self.pass_once() else min(MAX_BACKOFF_S, delay * 2)
            after_pass()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def pass_once(self) -> bool:
        """Ship what is spooled and prune what is past retention; whether the store took it."""
        try:
            await self.ship()
            await self._prune()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._set_up(False, exc)
            return False
        self._set_up(True)
        return True

    def nudge(self) -> None:
        """Ship now rather than at the next tick."""
        self._wake.set()

    def _set_up(self, up: bool, exc: Exception | None = None) -> None:
        if up != self.stats.store_up:
            if up:
                log.warning("the decision store is reachable again; shipping the spool")
            else:
                log.error(
                    "the decision store cannot be reached (%s): records wait in the spool", _describe(exc)
                )
        self.stats.store_up = up

    async def ship(self) -> int:
        """Ship everything spooled so far; the number of records shipped."""
        async with self._lock:
            count = 0
            for path in list(segments(self._directory, self._writer.name)):
                count += await self._ship_segment(
                    Segment(path), own=True, finished=path != self._writer.current
                )
            for name in sorted({writer_of(p) for p in segments(self._directory)} - {self._writer.name}):
                count += await self._adopt(name)
            return count

    async def _adopt(self, name: str) -> int:
        dead = DeadWriter(self._directory, name)
        if not dead.take():
            return 0  # alive, or being shipped by another worker
        count, done = 0, False
        try:
            for path in list(segments(self._directory, name)):
                count += await self._ship_segment(Segment(path), own=False, finished=True)
            done = not any(True for _ in segments(self._directory, name))
        finally:
            dead.release(done)
        if count:
            log.warning("shipped %d records spooled by a worker that stopped (%s)", count, name)
        return count

    async def _ship_segment(self, segment: Segment, own: bool, finished: bool) -> int:
        count = 0
        while True:
            shipped = await ship_batch(self._store, segment.path, segment.offset, self._batch)
            if not shipped.lines:
                break
            for line in shipped.unreadable:
                self.stats.torn += 1
                log.error("a spooled record could not be read and was dropped: %r", line)
            segment.advance(shipped.size)
            if own:
                self._writer.shipped(shipped.size)
            stored = shipped.lines - len(shipped.unreadable)
            count += stored
            self.stats.shipped += stored
            await asyncio.sleep(0)  # let requests in between batches
        if finished:
            left = segment.size() - segment.offset
            if left:  # a last line without its end: a write the crash cut short
                self.stats.torn += 1
                log.error("dropped %d bytes of a torn record at the end of %s", left, segment.path.name)
            segment.remove()
        return count

    async def _prune(self) -> None:
        now = time.time()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        gone = await self._store.prune(now - self._retention_s)
        if gone:
            log.info("deleted %d decisions older than the store's retention", gone)


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "unknown error"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def spool_directory(configured: str | None, url: str) -> Path:
    if configured:
        return Path(configured)
    path = sqlite_path(url)
    return path.parent / "spool" if path is not None else Path(".tiergate/spool")
