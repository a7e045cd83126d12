"""Connecting to the store: one async SQLAlchemy engine, SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def async_url(url: str) -> str:
    """The config's URL with the async driver this project uses (a driver the user named stays)."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    match = re.match(r"^postgres(?:ql)?(\+\w+)?://", url)
    if match and match.group(1) is None:
        return "postgresql+asyncpg://" + url[match.end() :]
    if match:
        return "postgresql" + match.group(1) + "://" + url[match.end() :]
    return url


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for any other engine."""
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the shipper's writes; NORMAL: a commit is durable once the WAL is
    # checkpointed, which is all a spool-fed store needs (the spool keeps what was not shipped).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(async_url(url))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(async_url(url), pool_size=5, max_overflow=5, pool_pre_ping=True)
