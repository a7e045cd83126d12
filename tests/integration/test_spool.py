"""The spool and its shipper on a real SQLite store: a store that is down makes the spool grow
(bounded, with a log line per change) and loses nothing once it is back; torn and foreign spools
are shipped by whoever finds them."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest

from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade
from gateway.store.protocol import DecisionQuery
from gateway.store.shipper import Shipper
from gateway.store.spool import SpoolWriter
from gateway.store.sql import SqlStore


class Outage(SqlStore):
    """A real store whose inserts fail while `down` is set (as a store that cannot be reached)."""

    down = False

    async def add_records(self, lines: Sequence[bytes]) -> None:
        if self.down:
            raise ConnectionRefusedError("the store is down")
        await super().add_records(lines)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Outage]:
    url = f"sqlite:///{tmp_path}/store.db"
    engine = create_engine(url)
    await upgrade(engine, url)
    store = Outage(engine)
    yield store
    await store.close()


def record(i: int) -> bytes:
    return msgspec.json.encode(
        {"id": f"{i:032x}", "time": 4_000_000_000.0 + i, "agent": "a", "route": "r", "status": 200}
    )


async def stored(store: SqlStore) -> list[int]:
    page = await store.decisions(DecisionQuery(limit=100_000))
    return sorted(int(msgspec.json.decode(r)["id"], 16) for r in page.records)


async def test_an_outage_grows_the_spool_within_its_bound_and_loses_nothing_after(
    store: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = len(record(0)) + 1
    spool = SpoolWriter(tmp_path / "spool", max_bytes=line * 50, segment_bytes=line * 8)
    shipper = Shipper(store, spool, interval_s=0.01, batch=7, retention_s=86400)
    store.down = True
    for i in range(40):
        spool.write(record(i))
    with pytest.raises(ConnectionRefusedError):
        await shipper.ship()
    assert spool.pending == 40 * line and spool.dropped == 0
    with caplog.at_level(logging.WARNING, logger="tiergate"):
        for i in range(40, 70):
            spool.write(record(i))
    assert spool.full and spool.dropped == 20 and spool.pending == 50 * line
    assert [r.message for r in caplog.records].count(
        next(r.message for r in caplog.records if "spool is full" in r.message)
    ) == 1  # one line when dropping starts, not one per record
    store.down = False
    assert await shipper.ship() == 50
    assert await stored(store) == list(range(50))
    assert spool.pending == 0 and not spool.full
    assert any("room again" in r.message for r in caplog.records)
    assert len(list((tmp_path / "spool").glob("*.spool"))) == 1  # finished segments are removed
    spool.write(record(70))
    assert await shipper.ship() == 1
    assert await stored(store) == [*range(50), 70]
    spool.close()


async def test_the_shipper_logs_each_change_of_reachability(
    store: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    spool = SpoolWriter(tmp_path / "spool", max_bytes=1 << 20)
    shipper = Shipper(store, spool, interval_s=0.01, batch=100, retention_s=86400)
    store.down = True
    spool.write(record(1))
    with caplog.at_level(logging.WARNING, logger="tiergate"):
        task = asyncio.create_task(shipper.run())
        await asyncio.sleep(0.2)
        assert not shipper.stats.store_up
        store.down = False
        shipper.nudge()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if shipper.stats.store_up and shipper.stats.shipped:
                break
        task.cancel()
    messages = [r.message for r in caplog.records]
    assert sum("cannot be reached" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
    assert await stored(store) == [1]
    spool.close()


async def test_a_dead_workers_spool_is_shipped_torn_end_and_all(store: Outage, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    dead = SpoolWriter(directory, max_bytes=1 << 20)
    for i in range(10):
        dead.write(record(i))
    assert dead.current is not None
    with dead.current.open("ab") as segment:
        segment.write(record(10)[:25])  # the write a crash cut short
    os.close(dead._fd)  # the process is gone: its lock goes with it
    dead._lock.close()
    alive = SpoolWriter(directory, max_bytes=1 << 20)
    alive.write(record(100))
    shipper = Shipper(store, alive, interval_s=0.01, batch=3, retention_s=86400)
    assert await shipper.ship() == 11
    assert await stored(store) == [*range(10), 100]
    assert shipper.stats.torn == 1
    assert {p.name.split(".")[0] for p in directory.iterdir()} == {alive.name}  # the dead one's are gone
    alive.close()
    assert list(directory.glob("*.lock")) == []


async def test_lines_that_are_not_records_are_dropped_and_the_rest_of_their_batch_stored(
    store: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = SpoolWriter(tmp_path / "spool", max_bytes=1 << 20)
    spool.write(record(1))
    spool.write(b"not json at all")
    spool.write(msgspec.json.encode({"id": "f" * 32, "time": 1.0, "route": "r", "status": 200}))  # no agent
    spool.write(record(2))
    shipper = Shipper(store, spool, interval_s=0.01, batch=10, retention_s=86400)
    assert await shipper.ship() == 2
    assert await stored(store) == [1, 2]
    assert shipper.stats.torn == 2
    assert sum("could not be read" in r.message for r in caplog.records) == 2
    store.down = True  # a store that fails a batch of good records keeps it for a retry
    spool.write(record(3))
    with pytest.raises(ConnectionRefusedError):
        await shipper.ship()
    store.down = False
    assert await shipper.ship() == 1
    assert await stored(store) == [1, 2, 3]
    spool.close()


async def test_a_live_workers_spool_is_left_to_it(store: Outage, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    first = SpoolWriter(directory, max_bytes=1 << 20)
    second = SpoolWriter(directory, max_bytes=1 << 20)
    first.write(record(1))
    second.write(record(2))
    assert await Shipper(store, second, 0.01, 10, 86400).ship() == 1
    assert await stored(store) == [2]
    assert await Shipper(store, first, 0.01, 10, 86400).ship() == 1
    assert await stored(store) == [1, 2]
    first.close()
    second.close()
