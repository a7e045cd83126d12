"""Quality events from several workers reading one store: each change is announced once."""

from __future__ import annotations

from gateway.config.models import AuditConfig
from gateway.governance.quality import EventSink, Governor, RouteQuality
from gateway.store.protocol import Outcome
from gateway.store.sql import SqlStore


async def test_a_change_that_every_worker_sees_is_announced_once(store: SqlStore) -> None:
    posted: list[object] = []
    sink = EventSink(store, posted.append)
    config = AuditConfig(reference="large", min_precision=0.9, on_breach="pause", min_samples=5)
    workers = [RouteQuality("r", config, ["classifier"], None, Governor()) for _ in range(2)]
    wrong = [Outcome(1.0, False, "audit", "classifier", 0.9)] * 10
    right = [Outcome(2.0, True, "audit", "classifier", 0.9)] * 200
    for outcomes in (wrong, right, wrong):
        for worker in workers:
            event = worker.judge(outcomes)
            assert event is not None and worker.breached == (outcomes is wrong)
            await sink.send(event)
    assert [e.kind for e in await store.events("r")] == [
        "quality.breach",
        "quality.recovered",
        "quality.breach",
    ]
    assert len(posted) == 3
