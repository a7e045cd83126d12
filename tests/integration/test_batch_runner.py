"""The batch runner on a real store: a batch past its completion window expires, its open lines
fail with batch_expired, and its files are written once."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from gateway.batch.files import FileKeeper
from gateway.batch.runner import BatchRunner
from gateway.batch.store import BatchRecord, Line, SqlBatchStore
from gateway.config.batch import BatchConfig
from gateway.http.wire import InputLimits
from gateway.pipeline.routes import RouteTable
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade


async def test_a_batch_past_its_window_expires_and_its_open_lines_fail(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    engine = create_engine(url)
    await upgrade(engine, url)
    store = SqlBatchStore(engine)
    files = FileKeeper(tmp_path / "files")
    now = time.time()
    batch = BatchRecord(
        id="batch_old",
        time=now - 90_000,
        agent="agent",
        status="in_progress",
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        expires_at=now - 3_600,
    )
    done = msgspec.json.encode({"status_code": 200, "request_id": "d1", "body": {}}).decode()
    await store.add_batch(
        batch,
        [
            Line(batch_id=batch.id, line=0, custom_id="answered", status="done", body="{}", result=done),
            Line(batch_id=batch.id, line=1, custom_id="late", status="pending", body="{}"),
            Line(batch_id=batch.id, line=2, custom_id="later", status="waiting", body="{}"),
        ],
    )
    # nothing here asks the request path: an expired batch runs no line
    runner = BatchRunner(
        store, files, None, RouteTable({}), {}, BatchConfig(), InputLimits(1 << 20, 100, 1 << 20)
    )  # type: ignore[arg-type]
    await runner.pass_once()
    await runner.pass_once()  # a second look changes nothing
    expired = await store.batch(batch.id)
    assert expired is not None and expired.status == "expired" and "expired_at" in expired.stamps
    assert expired.output_file_id is not None and expired.error_file_id is not None
    errors = [msgspec.json.decode(e) for e in files.read(expired.error_file_id).splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("late", "batch_expired"),
        ("later", "batch_expired"),
    ]
    assert [msgspec.json.decode(e)["custom_id"] for e in files.read(expired.output_file_id).splitlines()] == [
        "answered"
    ]
    await engine.dispose()


async def test_a_worker_that_renews_its_claims_keeps_lines_waiting_on_a_provider(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    engine = create_engine(url)
    await upgrade(engine, url)
    store = SqlBatchStore(engine)
    batch = BatchRecord(
        id="batch_long",
        time=0.0,
        agent="agent",
        status="in_progress",
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        expires_at=1e12,
    )
    lines = [
        Line(batch_id=batch.id, line=i, custom_id=f"c{i}", status="pending", body="{}") for i in range(2)
    ]
    await store.add_batch(batch, lines)
    assert await store.claim(lines[0], "alive", now=0.0)  # waiting hours in a provider batch
    assert await store.claim(lines[1], "gone", now=0.0)  # its worker died
    await store.renew("alive", now=1000.0)
    assert await store.reclaim(before=500.0) == 1  # only the dead worker's line goes back
    assert [line.custom_id for line in await store.pending(batch.id, 10, -1, False)] == ["c1"]
    await engine.dispose()
