"""Throwaway PostgreSQL databases for tests, made and dropped on the real server."""

from __future__ import annotations

import asyncio
import concurrent.futures

import asyncpg


def _run(admin_url: str, statement: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    # in a thread of its own: the caller's thread may be running an event loop already (a
    # browser driven by Playwright's sync API runs one)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()


def create_database(admin_url: str, name: str) -> str:
    _run(admin_url, f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, name: str) -> None:
    _run(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
