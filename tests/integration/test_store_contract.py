"""The store's contract, run on SQLite and on a real PostgreSQL: the same behaviour on both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError

from gateway.console.figures import Figures
from gateway.console.sessions import Sessions
from gateway.store.engine import create_engine
from gateway.store.migrate import current_revision, downgrade, head_revision, upgrade
from gateway.store.protocol import Audit, Cursor, DecisionQuery, Event, Feedback, Source
from gateway.store.responses import StoredResponse, StoredResponses
from gateway.store.schema import metadata
from gateway.store.sql import SqlStore


def row(
    i: int, agent: str = "a", route: str = "triage", tier: str | None = "rules", status: int = 200
) -> bytes:
    record = {"id": f"d{i:04d}", "time": 1000.0 + i, "agent": agent, "route": route, "status": status}
    if tier:
        record["tier"] = tier
    return msgspec.json.encode(record)


async def test_migrations_build_the_schema_the_code_uses(store: SqlStore) -> None:
    assert await current_revision(store.engine) == head_revision()

    def differences(conn: object) -> list[object]:
        return compare_metadata(MigrationContext.configure(conn), metadata)  # type: ignore[arg-type]

    async with store.engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_a_downgrade_removes_what_the_upgrade_made(store_url: str) -> None:
    engine = create_engine(store_url)
    await upgrade(engine, store_url)
    await upgrade(engine, store_url)  # again: nothing to do
    await downgrade(engine, "base")
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    assert set(tables) <= {"alembic_version"}
    assert await current_revision(engine) is None
    await engine.dispose()


async def test_decisions_are_stored_once_and_found_by_id(store: SqlStore) -> None:
    await store.add_records([row(1), row(2)])
    await store.add_records([row(2), row(3)])  # a spool shipped twice: the repeat is ignored
    found = await store.decision("d0002")
    assert found is not None
    assert msgspec.json.decode(found.record)["id"] == "d0002"
    assert found.feedback == []
    assert await store.decision("nope") is None
    page = await store.decisions(DecisionQuery(limit=10))
    assert [msgspec.json.decode(r)["id"] for r in page.records] == ["d0003", "d0002", "d0001"]
    assert page.next is None


async def test_a_record_is_stored_as_written_and_a_batch_with_a_stranger_stores_nothing(
    store: SqlStore,
) -> None:
    line = msgspec.json.encode(
        {
            "id": "u1",
            "time": 1234.5678901234,
            "agent": "ägent",
            "route": "triage",
            "status": 200,
            "last_user_message": 'say "hi"\n\u0000 naïve ✓',
            "attempts": [{"tier": "rules", "confidence": 1e-7}],
        }
    )
    await store.add_records([line])
    found = await store.decision("u1")
    assert found is not None and found.record == line
    page = await store.decisions(DecisionQuery(agent="ägent", since=1234.0))
    assert page.records == [line]
    assert (await store.decisions(DecisionQuery(tier="rules"))).records == []  # no tier: none stored
    for stranger in (b"{not json", msgspec.json.encode({"id": "u3", "time": 1.0})):
        with pytest.raises(DBAPIError):
            await store.add_records([row(2), stranger])
        assert await store.decision("d0002") is None


async def test_filters_and_pages_cover_every_match_once_newest_first(store: SqlStore) -> None:
    rows = [
        row(i, agent="a" if i % 2 else "b", tier="classifier" if i % 3 else "llm:small") for i in range(50)
    ]
    await store.add_records(rows)
    seen: list[str] = []
    after: Cursor | None = None
    while True:
        page = await store.decisions(DecisionQuery(agent="a", limit=7, after=after))
        seen += [msgspec.json.decode(r)["id"] for r in page.records]
        if page.next is None:
            break
        after = page.next
    expected = [r["id"] for r in map(msgspec.json.decode, reversed(rows)) if r["agent"] == "a"]
    assert seen == expected
    page = await store.decisions(DecisionQuery(tier="llm:small", since=1010.0, until=1030.0, limit=100))
    assert [msgspec.json.decode(r)["id"] for r in page.records] == [
        "d0027",
        "d0024",
        "d0021",
        "d0018",
        "d0015",
        "d0012",
    ]
    assert (await store.decisions(DecisionQuery(status=500))).records == []


async def test_same_time_decisions_page_by_id(store: SqlStore) -> None:
    same = [
        msgspec.json.encode({"id": f"s{i}", "time": 5.0, "agent": "a", "route": "r", "status": 200})
        for i in range(5)
    ]
    await store.add_records(same)
    first = await store.decisions(DecisionQuery(limit=2))
    second = await store.decisions(DecisionQuery(limit=10, after=first.next))
    ids = [msgspec.json.decode(r)["id"] for r in first.records + second.records]
    assert ids == ["s4", "s3", "s2", "s1", "s0"]


def said(source: Source, time: float, decision: str = "d0001", **fields: Any) -> Feedback:
    return Feedback(decision_id=decision, source=source, time=time, agent="a", route="triage", **fields)


async def test_feedback_replaces_per_source_and_travels_with_its_decision(store: SqlStore) -> None:
    await store.add_records([row(1)])
    await store.put_feedback(said("agent", 1.0, correct=True))
    await store.put_feedback(said("agent", 2.0, label="billing", correct=False))
    await store.put_feedback(said("reviewer", 3.0, score=0.5, comment="ok"))
    found = await store.decision("d0001")
    assert found is not None
    assert found.feedback == [
        said("agent", 2.0, label="billing", correct=False),
        said("reviewer", 3.0, score=0.5, comment="ok"),
    ]
    assert [f.source for f in await store.feedback("triage", since=2.5)] == ["reviewer"]
    assert await store.feedback("other") == []


async def test_an_audit_travels_with_its_decision_and_counts_as_an_outcome(store: SqlStore) -> None:
    await store.add_records([row(1), row(2)])
    audit = Audit(
        decision_id="d0001",
        time=1001.0,
        route="triage",
        tier="classifier",
        reference="llm:large",
        agreed=False,
        tokens=12,
        label="billing",
        confidence=0.91,
        reference_label="refund",
    )
    await store.add_audit(audit)
    await store.add_audit(audit)  # once only
    found = await store.decision("d0001")
    assert found is not None and found.audit == audit
    assert (await store.decision("d0002")).audit is None  # type: ignore[union-attr]
    await store.put_feedback(said("agent", 1003.0, decision="d0002", agreed=True))
    outcomes = await store.outcomes("triage", window=10)
    assert [(o.source, o.agreed) for o in outcomes] == [("feedback", True), ("audit", False)]
    assert await store.audits("triage", 10) == [audit]
    assert await store.tier_counts("triage", since=0) == {"rules": 2}
    assert set(await store.records(["d0001", "nope"])) == {"d0001"}


async def test_events_and_pruning(store: SqlStore) -> None:
    await store.add_event(Event(time=10.0, kind="drift", route="triage", detail={"psi": 0.3}))
    await store.add_event(Event(time=20.0, kind="reload"))
    assert [e.kind for e in await store.events("triage")] == ["drift", "reload"]
    assert (await store.events(since=15.0))[0].detail == {}
    await store.add_records([row(i) for i in range(10)])
    await store.put_feedback(said("agent", 1.0, correct=True))
    assert await store.prune(before=1005.0) == 5
    assert await store.decision("d0001") is None
    assert await store.feedback("triage") == []
    assert len((await store.decisions(DecisionQuery(limit=100))).records) == 5
    assert await store.ping()


def test_db_commands_and_a_gateway_that_will_not_serve_an_old_schema(
    postgres_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "agents": [{"id": "a", "api_key": "sk-a"}],
                "routes": [{"name": "r", "rules": [{"when": {"last_user_matches": "x"}, "answer": "y"}]}],
                "store": {"url": postgres_url, "spool_dir": str(tmp_path / "spool")},
            }
        )
    )

    def tiergate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60
        )

    current = tiergate("db", "current", "--config", str(config))
    assert current.returncode == 0 and "revision none (behind" in current.stdout
    refused = tiergate("serve", "--config", str(config))
    assert refused.returncode == 1
    assert "run `tiergate db upgrade --config FILE`" in refused.stderr
    upgraded = tiergate("db", "upgrade", "--config", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"revision {head_revision()} (up to date)" in upgraded.stdout
    assert "postgres@" in upgraded.stdout


async def test_each_new_record_is_summed_once_into_its_minute_and_its_hour(store: SqlStore) -> None:
    def priced(i: int, **fields: Any) -> bytes:
        record = {"id": f"m{i:04d}", "time": 600.0 + i, "agent": "a", "route": "triage", "status": 200}
        return msgspec.json.encode({**record, **fields})

    batch = [
        priced(1, tier="rules", confidence=0.95, latency_ms={"total": 0.4}, baseline_usd=0.002),
        priced(
            2, tier="llm:small", prompt_tokens=10, completion_tokens=5, cost_usd=0.001, baseline_usd=0.004
        ),
        priced(3, tier="llm:small", cache="hit", latency_ms={"total": 3.0}),
        priced(4, status=429, error_code="loop_detected_repeat"),
        priced(70, status=502, tier=None),  # the next minute
    ]
    await store.add_records(batch[:3])
    await store.add_records(batch)  # shipped again with more: the first three count once
    figures = Figures(store.engine, clock=lambda: 600.0 + 3600)
    totals = (await figures.overview("hour"))["totals"]
    assert (totals.requests, totals.errors, totals.refused, totals.loops, totals.cache_hits) == (
        5,
        1,
        1,
        1,
        1,
    )
    assert (totals.prompt_tokens, totals.completion_tokens) == (10, 5)
    assert totals.cost_usd == pytest.approx(0.001) and totals.savings_usd == pytest.approx(0.005)
    assert totals.latency[0] == 4 and totals.latency[2] == 1  # under 1 ms (missing: 0), under 5 ms
    routes = await figures.routes("hour")
    assert routes["triage"]["tiers"] == {"rules": 1, "llm:small": 2, "none": 2}
    assert routes["triage"]["coverage"] == pytest.approx(1 / 5)
    assert routes["triage"]["confidence"][9] == 1
    assert (await figures.agents("hour"))["a"]["tiers"]["rules"] == 1
    assert await figures.loops(within_s=3600) == {"a": 1}  # what the overview's attention list says
    assert await figures.burn("a", 0.0) == [(3600.0, 15.0), (7200.0, 15.0)]  # each hour to now
    assert await store.prune(before=660.0) == 4  # the first minute's decisions and their sums
    assert (await figures.overview("hour"))["totals"].requests == 1
    assert (await figures.overview("day"))["totals"].requests == 5  # an hour goes when it is all old


async def test_console_sessions_are_found_by_their_secret_until_they_end(store: SqlStore) -> None:
    now = [1000.0]
    sessions = Sessions(store.engine, lifetime_s=60, clock=lambda: now[0])
    secret, opened = await sessions.open("viewer")
    found = await sessions.find(secret)
    assert found == opened and found is not None and not found.may_decide
    assert await sessions.find(secret + "x") is None and await sessions.find(None) is None
    admin_secret, admin = await sessions.open("admin")
    assert admin.may_decide and admin.csrf != opened.csrf
    await sessions.close(admin_secret)
    assert await sessions.find(admin_secret) is None  # logged out
    now[0] += 61
    assert await sessions.find(secret) is None  # expired


async def test_responses_are_kept_until_they_expire_and_deleted_by_their_own_agent(store: SqlStore) -> None:
    now = [1000.0]
    kept = StoredResponses(store.engine, keep_s=60, clock=lambda: now[0])
    first = StoredResponse("resp_1", "agent", b'{"id": "resp_1"}', b'[{"role": "user", "content": "hi"}]')
    await kept.put(first)
    assert await kept.get("resp_1") == first and await kept.get("resp_2") is None
    assert not await kept.delete("resp_1", "other")  # another agent's: untouched
    assert await kept.get("resp_1") == first
    assert await kept.delete("resp_1", "agent") and await kept.get("resp_1") is None
    await kept.put(StoredResponse("resp_3", "agent", b"{}", b"[]"))
    now[0] += 61
    assert await kept.get("resp_3") is None  # expired
