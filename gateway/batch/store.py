"""Files, batches and their lines in the decision store (SQLAlchemy Core, SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.schema import batch_lines, batches, files

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")


class FileRecord(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    time: float
    agent: str
    purpose: str
    filename: str
    bytes: int


class BatchRecord(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    time: float
    agent: str
    status: str
    endpoint: str
    input_file_id: str
    completion_window: str
    expires_at: float
    stamps: dict[str, float] = {}
    output_file_id: str | None = None
    error_file_id: str | None = None
    metadata: dict[str, str] | None = None


class Line(msgspec.Struct, kw_only=True, frozen=True):
    batch_id: str
    line: int
    custom_id: str
    status: str  # pending, running, done, failed
    body: str | None = None
    result: str | None = None
    error: str | None = None


class Counts(msgspec.Struct, frozen=True):
    total: int
    done: int
    failed: int
    running: int

    @property
    def open(self) -> int:
        return self.total - self.done - self.failed


class SqlBatchStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add_file(self, record: FileRecord) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(files.insert().values(msgspec.structs.asdict(record)))

    async def file(self, file_id: str) -> FileRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(files).where(files.c.id == file_id))).first()
        return None if row is None else FileRecord(**row._mapping)

    async def add_batch(self, record: BatchRecord, lines: list[Line]) -> None:
        values = _batch_values(record)
        async with self.engine.begin() as conn:
            await conn.execute(batches.insert().values(values))
            for start in range(0, len(lines), 1000):
                chunk = [msgspec.structs.asdict(line) for line in lines[start : start + 1000]]
                await conn.execute(batch_lines.insert(), chunk)

    async def batch(self, batch_id: str) -> BatchRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(batches).where(batches.c.id == batch_id))).first()
        return None if row is None else _batch(row._mapping)

    async def batches(self, agent: str, limit: int, after: str | None) -> list[BatchRecord]:
        statement = select(batches).where(batches.c.agent == agent)
        if after is not None:
            anchor = await self.batch(after)
            if anchor is not None:
                statement = statement.where(batches.c.time < anchor.time)
        statement = statement.order_by(batches.c.time.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [_batch(r._mapping) for r in await conn.execute(statement)]

    async def active(self) -> list[BatchRecord]:
        statement = select(batches).where(batches.c.status.in_(ACTIVE)).order_by(batches.c.time)
        async with self.engine.connect() as conn:
            return [_batch(r._mapping) for r in await conn.execute(statement)]

    async def update_batch(self, batch_id: str, expected: str | None = None, **fields: Any) -> bool:
        """Change a batch (only while its status is `expected`, when given); whether it changed."""
        if "stamps" in fields:
            fields["stamps"] = msgspec.json.encode(fields["stamps"]).decode()
        statement = update(batches).where(batches.c.id == batch_id)
        if expected is not None:
            statement = statement.where(batches.c.status == expected)
        async with self.engine.begin() as conn:
            return (await conn.execute(statement.values(**fields))).rowcount == 1

    async def pending(self, batch_id: str, limit: int, after: int, waiting: bool) -> list[Line]:
        """Lines to run after line `after`: pending ones, and with `waiting` those that wait for
        a window too."""
        c = batch_lines.c
        statuses = ("pending", "waiting") if waiting else ("pending",)
        statement = (
            select(batch_lines)
            .where(c.batch_id == batch_id, c.status.in_(statuses), c.line > after)
            .order_by(c.line)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [Line(**_line(r._mapping)) for r in await conn.execute(statement)]

    async def claim(self, line: Line, owner: str, now: float) -> bool:
        """Take a pending (or waiting) line for this worker; False when another took it first."""
        c = batch_lines.c
        statement = (
            update(batch_lines)
            .where(c.batch_id == line.batch_id, c.line == line.line, c.status == line.status)
            .values(status="running", owner=owner, claimed_at=now)
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def wait(self, line: Line, owner: str) -> None:
        """Give a claimed line back to wait for a window (it needs an LLM)."""
        await self._set(line, owner, {"status": "waiting", "owner": None, "claimed_at": None})

    async def finish(
        self, line: Line, owner: str, status: str, result: Any = None, error: Any = None
    ) -> None:
        values: dict[str, Any] = {"status": status}
        values["result"] = None if result is None else msgspec.json.encode(result).decode()
        values["error"] = None if error is None else msgspec.json.encode(error).decode()
        await self._set(line, owner, values)

    async def _set(self, line: Line, owner: str, values: dict[str, Any]) -> None:
        c = batch_lines.c
        statement = (
            update(batch_lines)
            .where(c.batch_id == line.batch_id, c.line == line.line, c.status == "running", c.owner == owner)
            .values(**values)
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)

    async def fail_open(self, batch_id: str, code: str, message: str) -> int:
        """Fail every pending line (a cancelled or expired batch); how many."""
        c = batch_lines.c
        error = msgspec.json.encode({"code": code, "message": message}).decode()
        statement = (
            update(batch_lines)
            .where(c.batch_id == batch_id, c.status.in_(("pending", "waiting")))
            .values(status="failed", error=error)
        )
        async with self.engine.begin() as conn:
            return int((await conn.execute(statement)).rowcount or 0)

    async def reclaim(self, before: float, owner: str | None = None) -> int:
        """Lines left running by a worker that is gone (claimed before `before`), or by `owner`,
        go back to pending."""
        c = batch_lines.c
        condition = c.owner == owner if owner is not None else c.claimed_at < before
        statement = (
            update(batch_lines)
            .where(and_(c.status == "running", condition))
            .values(status="pending", owner=None, claimed_at=None)
        )
        async with self.engine.begin() as conn:
            return int((await conn.execute(statement)).rowcount or 0)

    async def renew(self, owner: str, now: float) -> None:
        """The lines `owner` is running are still its own (their lease starts again)."""
        c = batch_lines.c
        statement = update(batch_lines).where(c.status == "running", c.owner == owner).values(claimed_at=now)
        async with self.engine.begin() as conn:
            await conn.execute(statement)

    async def counts(self, batch_id: str) -> Counts:
        c = batch_lines.c
        statement = select(c.status, func.count()).where(c.batch_id == batch_id).group_by(c.status)
        async with self.engine.connect() as conn:
            found = {status: int(n) for status, n in await conn.execute(statement)}
        return Counts(
            sum(found.values()), found.get("done", 0), found.get("failed", 0), found.get("running", 0)
        )

    async def lines(self, batch_id: str) -> list[Line]:
        statement = select(batch_lines).where(batch_lines.c.batch_id == batch_id).order_by(batch_lines.c.line)
        async with self.engine.connect() as conn:
            return [Line(**_line(r._mapping)) for r in await conn.execute(statement)]


def _line(row: Any) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("owner", "claimed_at") and v is not None}


def _batch_values(record: BatchRecord) -> dict[str, Any]:
    values = msgspec.structs.asdict(record)
    values["stamps"] = msgspec.json.encode(record.stamps).decode()
    values["metadata"] = None if record.metadata is None else msgspec.json.encode(record.metadata).decode()
    return values


def _batch(row: Any) -> BatchRecord:
    values = {k: v for k, v in row.items() if v is not None}
    values["stamps"] = msgspec.json.decode(values.get("stamps") or "{}")
    if "metadata" in values:
        values["metadata"] = msgspec.json.decode(values["metadata"])
    return BatchRecord(**values)
