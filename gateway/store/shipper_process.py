"""Each worker's shipper runs as a process of its own, beside the worker.

Shipping in the worker itself measurably slowed its requests even though the worker never waits
for the database: SQLite's writes run on a thread that shares the worker's interpreter lock, and
a driver's per-batch work runs on its event loop. In a process of its own the shipper costs the
worker nothing but a line read now and then.

The worker (`ShipperProcess`) starts the process and talks to it over two pipes: down the child's
stdin go `ship` (ship now, as a decision lookup asks) and `finish` (the worker stopped writing:
ship everything, the segment being written too, and exit); up its stdout come reports (JSON
lines: bytes and records shipped, torn lines, whether the store takes records), which keep the
spool's bound and the metrics. The child exits when its stdin closes: a worker killed outright
leaves its spool to the next shipper that finds its lock free. A child that dies is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import msgspec

from gateway.store.engine import create_engine
from gateway.store.shipper import Shipper, ShipperStats
from gateway.store.spool import SpoolWriter, segments
from gateway.store.sql import SqlStore

if TYPE_CHECKING:  # the process itself needs none of the config's models
    from gateway.config.models import StoreConfig

log = logging.getLogger("tiergate")

RESTART_S = 1.0
READY_S = 15.0  # a worker waits this long at most for its shipper's first pass before it serves


class Settings(msgspec.Struct, frozen=True):
    """What the child needs: the store, the spool and how to ship."""

    url: str
    directory: str
    writer: str
    interval_s: float
    batch: int
    retention_s: float


class Report(msgspec.Struct, frozen=True):
    bytes: int  # of this worker's records shipped, in all
    shipped: int
    torn: int
    store_up: bool


class ShipperProcess:
    """The worker's handle on its shipper process: `nudge`, `stats`, and `close`."""

    def __init__(self, settings: Settings, spool: SpoolWriter) -> None:
        self._settings = msgspec.json.encode(settings).decode()
        self._spool = spool
        self.stats = ShipperStats()
        self._process: subprocess.Popen[bytes] | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.on_report: Callable[[], None] = lambda: None  # after each report (the metrics)

    @classmethod
    async def start(cls, config: StoreConfig, spool: SpoolWriter) -> ShipperProcess:
        """Start the process, and wait for its first pass over the spool (what earlier workers
        left is shipped, or found waiting for the store) before the worker serves."""
        settings = Settings(
            url=config.url,
            directory=str(spool.directory),
            writer=spool.name,
            interval_s=config.ship_interval_s,
            batch=config.ship_batch,
            retention_s=config.retention_days * 86400,
        )
        shipper = cls(settings, spool)
        shipper._task = asyncio.create_task(shipper._supervise(), name="tiergate-shipper")
        try:
            await asyncio.wait_for(shipper._ready.wait(), READY_S)
        except TimeoutError:
            log.error("the shipper process has not started within %.0f s; serving anyway", READY_S)
        return shipper

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            # subprocess.Popen, not the event loop's own: it closes every descriptor of the
            # worker's in the child (the listening socket among them), where uvloop's does not.
            process = subprocess.Popen(  # noqa: ASYNC220 - a fork and exec, a millisecond or two
                [sys.executable, "-m", "gateway.store.shipper_process", self._settings],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
            assert process.stdin is not None and process.stdout is not None
            os.set_blocking(process.stdin.fileno(), False)
            self._process = process
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, reader), process.stdout
            )
            try:
                await self._follow(reader)
            finally:
                transport.close()
                process.stdin.close()
            code = await _exited(process)
            if not self._closing:
                log.error("the shipper process stopped (exit code %s); starting it again", code)
                await asyncio.sleep(RESTART_S)

    async def _follow(self, reader: asyncio.StreamReader) -> None:
        seen = 0  # each process counts from zero
        shipped, torn = self.stats.shipped, self.stats.torn
        while line := await reader.readline():
            try:
                report = msgspec.json.decode(line, type=Report)
            except msgspec.DecodeError:
                log.error("the shipper process said something unexpected: %r", line[:200])
                continue
            self._spool.shipped(report.bytes - seen)
            seen = report.bytes
            self.stats.shipped = shipped + report.shipped
            self.stats.torn = torn + report.torn
            self.stats.store_up = report.store_up
            self._ready.set()
            self.on_report()

    def nudge(self) -> None:
        """Ship now rather than at the next tick."""
        self._send(b"ship\n")

    def _send(self, command: bytes) -> None:
        process = self._process
        if process is not None and process.stdin is not None and not process.stdin.closed:
            # a full pipe (a process that has stopped reading) drops a nudge; nothing waits on it
            with contextlib.suppress(OSError):
                os.write(process.stdin.fileno(), command)

    async def close(self, timeout_s: float) -> None:
        """Stop writing, let the process ship what is spooled (for `timeout_s` at most) and wait
        for it; what is left stays spooled for the next start."""
        self._closing = True
        self._spool.stop()
        process = self._process
        if process is not None:
            self._send(b"finish\n")
            try:
                await asyncio.wait_for(_exited(process), timeout_s)
            except TimeoutError:
                log.error("records left in the spool at shutdown; they are shipped at the next start")
                process.kill()
                await _exited(process)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 1.0)


async def _exited(process: subprocess.Popen[bytes]) -> int:
    return await asyncio.to_thread(process.wait)


class WatchedSpool:
    """A live worker's spool as its shipper process sees it: the newest segment is the one being
    written, until the worker says it stopped."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.stopped = False
        self.bytes = 0

    @property
    def current(self) -> Path | None:
        if self.stopped:
            return None
        found = list(segments(self.directory, self.name))
        return found[-1] if found else None

    def shipped(self, size: int) -> None:
        self.bytes += size


async def _child(settings: Settings, out: BinaryIO) -> None:
    spool = WatchedSpool(Path(settings.directory), settings.writer)
    store = SqlStore(create_engine(settings.url))
    shipper = Shipper(store, spool, settings.interval_s, settings.batch, settings.retention_s)
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    reported: Report | None = None

    def report() -> None:
        nonlocal reported
        now = Report(spool.bytes, shipper.stats.shipped, shipper.stats.torn, shipper.stats.store_up)
        if now != reported:
            out.write(msgspec.json.encode(now) + b"\n")
            out.flush()
            reported = now

    await shipper.pass_once()
    report()
    running = asyncio.create_task(shipper.run(after_pass=report))
    try:
        while command := await commands.readline():
            if command == b"ship\n":
                shipper.nudge()
            elif command == b"finish\n":
                spool.stopped = True
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                try:
                    await shipper.ship()
                except Exception as exc:
                    log.error("records left in the spool at shutdown (%s); shipped at the next start", exc)
                break
        # stdin closed without a finish: the worker is gone, and its spool waits for a successor
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        report()
        await store.close()


def main() -> None:
    # A Ctrl-C or a SIGTERM to the whole process group reaches this process too: it stops when
    # its worker tells it to (or is gone), so that it ships what the worker spooled until then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Reports go up the pipe that was stdout; anything else written to stdout goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    asyncio.run(_child(msgspec.json.decode(sys.argv[1], type=Settings), out))


if __name__ == "__main__":
    main()
