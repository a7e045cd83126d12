"""Versioned schema migrations with Alembic, run from code (`tiergate db upgrade`, or at start-up
for SQLite). The scripts live in gateway/store/migrations/versions."""

from __future__ import annotations

import asyncio
import fcntl
from pathlib import Path
from typing import IO, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.engine import sqlite_path

MIGRATIONS = Path(__file__).parent / "migrations"
PG_LOCK_KEY = 0x7469_6572  # one upgrade at a time across a fleet


def alembic_config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def _upgrade(connection: Any, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
    command.upgrade(alembic_config(connection), revision)


def _downgrade(connection: Any, revision: str) -> None:
    command.downgrade(alembic_config(connection), revision)


def _locked(path: str) -> IO[str]:
    lock = open(path, "w")  # noqa: SIM115 - held until the upgrade is done
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


async def upgrade(engine: AsyncEngine, url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`. Several workers starting at once on one SQLite file take
    turns (a lock file beside it); on PostgreSQL an advisory lock does the same."""
    path = sqlite_path(url)
    lock = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = await asyncio.to_thread(_locked, str(path) + ".migrate.lock")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
    finally:
        if lock is not None:
            lock.close()


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade, revision)
