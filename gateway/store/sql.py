"""The store on SQLAlchemy Core: one implementation for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import and_, delete, func, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.store.protocol import (
    Audit,
    Cursor,
    DecisionQuery,
    Event,
    Feedback,
    Outcome,
    Page,
    StoredDecision,
)
from gateway.store.rollups import as_tuples, decode, slot_rows, upsert_sql
from gateway.store.schema import (
    approvals,
    audits,
    decision_hours,
    decision_minutes,
    decisions,
    events,
    feedback,
)

_COLUMNS = "INSERT INTO decisions (id, time, agent, route, tier, status, record) "
INSERT_RECORDS_SQLITE = (
    _COLUMNS + "SELECT value ->> '$.id', value ->> '$.time', value ->> '$.agent', value ->> '$.route',"
    " value ->> '$.tier', value ->> '$.status', value FROM json_each(?) WHERE true"
    " ON CONFLICT (id) DO NOTHING"
)
# PostgreSQL refuses to read a record holding the escape \u0000 (it cannot be text there), whichever
# field it reads: the columns are read from a copy with that escape replaced, the record kept whole.
INSERT_RECORDS_POSTGRES = (
    _COLUMNS + "SELECT c.id, c.time, c.agent, c.route, c.tier, c.status, r::text"
    " FROM json_array_elements($1::json) AS r, LATERAL json_to_record("
    "CASE WHEN strpos(r::text, '\\u0000') = 0 THEN r ELSE replace(r::text, '\\u0000', '\\ufffd')::json END"
    ") AS c(id text, time float8, agent text, route text, tier text, status integer)"
    " ON CONFLICT (id) DO NOTHING"
)

FEEDBACK_FIELDS = (
    "time",
    "agent",
    "route",
    "label",
    "correct",
    "score",
    "comment",
    "agreed",
    "tier",
    "confidence",
)


class _Repeated(Exception):
    """Some records of a batch were stored before: its transaction is rolled back."""

    def __init__(self, records: list[Any]) -> None:
        super().__init__("records stored before")
        self.records = records


class SqlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if postgres else sqlite.insert
        self._insert_records = INSERT_RECORDS_POSTGRES if postgres else INSERT_RECORDS_SQLITE
        self._rollups = [
            (width_s, upsert_sql(table.name, postgres))
            for width_s, table in ((60, decision_minutes), (3600, decision_hours))
        ]

    async def add_records(self, lines: Sequence[bytes]) -> None:
        if not lines:
            return
        # The shipper's batches are the store's one hot path. The whole batch goes as one JSON
        # array in one parameter, and the database takes it apart: the worker's event loop does
        # no per-record work, and SQLite's thread takes Python's lock once per batch, not twice
        # per row as a row-by-row insert does (which slowed the event loop measurably).
        payload = (b"[" + b",".join(lines) + b"]").decode()
        # The records not stored before are summed into the console's rollups in the same
        # transaction, so a batch shipped twice is counted once. Usually every record is new (the
        # count inserted says so); a batch shipped again is rolled back and stored once more,
        # summing only the records that were not there.
        try:
            async with self.engine.begin() as conn:
                inserted = (await conn.exec_driver_sql(self._insert_records, (payload,))).rowcount
                new = decode(lines)
                if inserted != len(new):
                    raise _Repeated(new)
                await self._add_rollups(conn, new)
        except _Repeated as repeated:
            async with self.engine.begin() as conn:
                ids = [r.id for r in repeated.records]
                stored: set[str] = set()
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    found = await conn.execute(select(decisions.c.id).where(decisions.c.id.in_(chunk)))
                    stored.update(row[0] for row in found)
                await conn.exec_driver_sql(self._insert_records, (payload,))
                await self._add_rollups(conn, [r for r in repeated.records if r.id not in stored])

    async def _add_rollups(self, conn: AsyncConnection, records: list[Any]) -> None:
        if records:
            for width_s, statement in self._rollups:
                await conn.exec_driver_sql(statement, as_tuples(slot_rows(records, width_s)))

    async def decision(self, decision_id: str) -> StoredDecision | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(decisions.c.record).where(decisions.c.id == decision_id))
            ).first()
            if row is None:
                return None
            audited = (await conn.execute(select(audits).where(audits.c.decision_id == decision_id))).first()
            audit = None if audited is None else _audit(audited._mapping)
            return StoredDecision(row.record.encode(), await _feedback_of(conn, decision_id), audit)

    async def decisions(self, query: DecisionQuery) -> Page:
        c = decisions.c
        conditions = []
        for column, value in (
            (c.agent, query.agent),
            (c.route, query.route),
            (c.tier, query.tier),
            (c.status, query.status),
        ):
            if value is not None:
                conditions.append(column == value)
        if query.since is not None:
            conditions.append(c.time >= query.since)
        if query.until is not None:
            conditions.append(c.time < query.until)
        if query.after is not None:
            conditions.append(tuple_(c.time, c.id) < tuple_(query.after.time, query.after.id))
        statement = (
            select(c.id, c.time, c.record)
            .where(and_(True, *conditions))
            .order_by(c.time.desc(), c.id.desc())
            .limit(query.limit + 1)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        last = rows[-1] if more and rows else None
        return Page([r.record.encode() for r in rows], Cursor(last.time, last.id) if last else None)

    async def put_feedback(self, said: Feedback) -> None:
        values = msgspec.structs.asdict(said)
        statement = self._insert(feedback).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=["decision_id", "source"],
            set_={name: statement.excluded[name] for name in FEEDBACK_FIELDS},
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)

    async def feedback(self, route: str, since: float | None = None) -> list[Feedback]:
        statement = select(feedback).where(feedback.c.route == route)
        if since is not None:
            statement = statement.where(feedback.c.time >= since)
        async with self.engine.connect() as conn:
            rows = await conn.execute(statement.order_by(feedback.c.time))
            return [_feedback(r._mapping) for r in rows]

    async def feedback_of(self, decision_id: str) -> list[Feedback]:
        async with self.engine.connect() as conn:
            return await _feedback_of(conn, decision_id)

    async def add_audit(self, audit: Audit) -> None:
        statement = self._insert(audits).values(msgspec.structs.asdict(audit))
        async with self.engine.begin() as conn:
            await conn.execute(statement.on_conflict_do_nothing(index_elements=["decision_id"]))

    async def audits(self, route: str, limit: int, since: float | None = None) -> list[Audit]:
        statement = select(audits).where(audits.c.route == route).order_by(audits.c.time.desc()).limit(limit)
        if since is not None:
            statement = statement.where(audits.c.time >= since)
        async with self.engine.connect() as conn:
            return [_audit(r._mapping) for r in await conn.execute(statement)]

    async def outcomes(self, route: str, window: int) -> list[Outcome]:
        audited = (
            select(audits.c.time, audits.c.agreed, audits.c.tier, audits.c.confidence)
            .where(audits.c.route == route)
            .order_by(audits.c.time.desc())
            .limit(window)
        )
        said = (
            select(feedback.c.time, feedback.c.agreed, feedback.c.tier, feedback.c.confidence)
            .where(feedback.c.route == route, feedback.c.agreed.is_not(None))
            .order_by(feedback.c.time.desc())
            .limit(window)
        )
        async with self.engine.connect() as conn:
            found = [
                Outcome(r.time, bool(r.agreed), "audit", r.tier, r.confidence)
                for r in await conn.execute(audited)
            ]
            found += [
                Outcome(r.time, bool(r.agreed), "feedback", r.tier, r.confidence)
                for r in await conn.execute(said)
            ]
        found.sort(key=lambda o: o.time, reverse=True)
        return found[:window]

    async def tier_counts(self, route: str, since: float) -> dict[str, int]:
        statement = (
            select(decisions.c.tier, func.count())
            .where(decisions.c.route == route, decisions.c.time >= since)
            .group_by(decisions.c.tier)
        )
        async with self.engine.connect() as conn:
            return {tier or "none": int(n) for tier, n in await conn.execute(statement)}

    async def records(self, decision_ids: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        async with self.engine.connect() as conn:
            for start in range(0, len(decision_ids), 500):
                chunk = list(decision_ids[start : start + 500])
                rows = await conn.execute(
                    select(decisions.c.id, decisions.c.record).where(decisions.c.id.in_(chunk))
                )
                found.update((r.id, r.record.encode()) for r in rows)
        return found

    async def add_event(self, event: Event) -> None:
        values = {
            "time": event.time,
            "kind": event.kind,
            "route": event.route,
            "detail": msgspec.json.encode(event.detail).decode(),
        }
        async with self.engine.begin() as conn:
            await conn.execute(events.insert().values(values))

    async def events(self, route: str | None = None, since: float | None = None) -> list[Event]:
        statement = select(events)
        if route is not None:
            statement = statement.where(or_(events.c.route == route, events.c.route.is_(None)))
        if since is not None:
            statement = statement.where(events.c.time >= since)
        async with self.engine.connect() as conn:
            rows = await conn.execute(statement.order_by(events.c.time, events.c.id))
            return [
                Event(time=r.time, kind=r.kind, route=r.route, detail=msgspec.json.decode(r.detail))
                for r in rows
            ]

    async def prune(self, before: float) -> int:
        old = select(decisions.c.id).where(decisions.c.time < before)
        async with self.engine.begin() as conn:
            await conn.execute(delete(feedback).where(feedback.c.decision_id.in_(old)))
            await conn.execute(delete(audits).where(audits.c.time < before))
            gone = await conn.execute(delete(decisions).where(decisions.c.time < before))
            await conn.execute(delete(events).where(events.c.time < before))
            await conn.execute(delete(decision_minutes).where(decision_minutes.c.slot < before // 60))
            await conn.execute(delete(decision_hours).where(decision_hours.c.slot < before // 3600))
            await conn.execute(
                delete(approvals).where(approvals.c.time < before, approvals.c.status != "pending")
            )
        return int(gone.rowcount or 0)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(select(1))
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()


async def _feedback_of(conn: AsyncConnection, decision_id: str) -> list[Feedback]:
    said = await conn.execute(
        select(feedback).where(feedback.c.decision_id == decision_id).order_by(feedback.c.source)
    )
    return [_feedback(r._mapping) for r in said]


def _audit(row: Any) -> Audit:
    return Audit(**{k: v for k, v in row.items() if v is not None})


def _feedback(row: Any) -> Feedback:
    return Feedback(**{k: v for k, v in row.items() if v is not None})
