"""Approvals and trust in the store, on SQLAlchemy Core (SQLite and PostgreSQL alike)."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.protocol import Approval, ApprovalStatus, Trust
from gateway.store.schema import approvals, trust


class SqlApprovals:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def add_approval(self, approval: Approval) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(approvals.insert().values(msgspec.structs.asdict(approval)))

    async def approval(self, approval_id: str) -> Approval | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(approvals).where(approvals.c.id == approval_id))).first()
        return None if row is None else _approval(row._mapping)

    async def approval_of(self, decision_id: str) -> Approval | None:
        """The approval that held this decision's answer, if one did."""
        statement = select(approvals).where(approvals.c.decision_id == decision_id).limit(1)
        async with self.engine.connect() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else _approval(row._mapping)

    async def approvals(
        self, status: ApprovalStatus | None = None, review: bool = False, limit: int = 100
    ) -> list[Approval]:
        statement = select(approvals).order_by(approvals.c.time.desc(), approvals.c.id.desc()).limit(limit)
        if status is not None:
            statement = statement.where(approvals.c.status == status)
        if review:
            statement = statement.where(approvals.c.review == "pending")
        async with self.engine.connect() as conn:
            return [_approval(r._mapping) for r in await conn.execute(statement)]

    async def latest_approval(self, agent: str, request_hash: str, since: float) -> Approval | None:
        c = approvals.c
        statement = (
            select(approvals)
            .where(c.agent == agent, c.request_hash == request_hash, c.time >= since, c.delivered.is_(False))
            .order_by(c.time.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else _approval(row._mapping)

    async def decide(
        self, approval_id: str, status: ApprovalStatus, now: float, note: str | None, edited: str | None
    ) -> bool:
        c = approvals.c
        values = {"status": status, "decided_at": now, "note": note, "edited": edited}
        held = update(approvals).where(c.id == approval_id, c.status == "pending").values(**values)
        reviewed = (
            update(approvals)
            .where(c.id == approval_id, c.review == "pending")
            .values(review="done", **values)
        )
        async with self.engine.begin() as conn:
            if (await conn.execute(held)).rowcount == 1:
                return True
            return (await conn.execute(reviewed)).rowcount == 1

    async def delivered(self, approval_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(approvals).where(approvals.c.id == approval_id).values(delivered=True))

    async def expire(self, now: float) -> list[Approval]:
        c = approvals.c
        due = select(approvals).where(c.status == "pending", c.expires_at < now)
        expired: list[Approval] = []
        async with self.engine.begin() as conn:
            for row in (await conn.execute(due)).all():
                done = await conn.execute(
                    update(approvals)
                    .where(and_(c.id == row.id, c.status == "pending"))
                    .values(status="expired", decided_at=now)
                )
                if done.rowcount == 1:
                    expired.append(msgspec.structs.replace(_approval(row._mapping), status="expired"))
        return expired

    async def trust_of(self, agent: str, condition: str) -> Trust | None:
        statement = select(trust).where(trust.c.agent == agent, trust.c.condition == condition)
        async with self.engine.connect() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else Trust(**row._mapping)

    async def put_trust(self, record: Trust) -> None:
        values = msgspec.structs.asdict(record)
        statement = self._insert(trust).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=["agent", "condition"],
            set_={name: statement.excluded[name] for name in ("streak", "trusted", "since", "reason")},
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)

    async def trusts(self) -> list[Trust]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(trust).order_by(trust.c.agent, trust.c.condition))
            return [Trust(**r._mapping) for r in rows]


def _approval(row: Any) -> Approval:
    return Approval(**{k: v for k, v in row.items() if v is not None})
