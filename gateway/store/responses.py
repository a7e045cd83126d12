"""Responses API responses in the store, so any worker (or gateway) on it continues a conversation
from `previous_response_id`. Each is kept for a configured time; expired ones are deleted as new
ones are written."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.schema import responses


class StoredResponse(msgspec.Struct, frozen=True):
    id: str
    agent: str
    response: bytes  # the response object's JSON
    history: bytes  # the conversation it ends, as chat messages' JSON


class StoredResponses:
    PRUNE_EVERY = 100  # writes between deletions of expired responses

    def __init__(self, engine: AsyncEngine, keep_s: float, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._keep_s = keep_s
        self._clock = clock
        self._writes = 0

    async def put(self, stored: StoredResponse) -> None:
        now = self._clock()
        async with self._engine.begin() as conn:
            if self._writes % self.PRUNE_EVERY == 0:
                await conn.execute(delete(responses).where(responses.c.expires < now))
            await conn.execute(
                insert(responses).values(
                    id=stored.id,
                    agent=stored.agent,
                    created=now,
                    expires=now + self._keep_s,
                    response=stored.response.decode(),
                    history=stored.history.decode(),
                )
            )
        self._writes += 1

    async def delete(self, response_id: str, agent: str) -> bool:
        """Forget an agent's response; False when it had none by that id."""
        c = responses.c
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(responses).where(c.id == response_id, c.agent == agent))
        return bool(result.rowcount)

    async def get(self, response_id: str) -> StoredResponse | None:
        c = responses.c
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(c.agent, c.response, c.history).where(
                        c.id == response_id, c.expires > self._clock()
                    )
                )
            ).first()
        if row is None:
            return None
        return StoredResponse(response_id, row.agent, row.response.encode(), row.history.encode())
