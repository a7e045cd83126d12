"""Console logins: the admin key (may decide) or a viewer key (sees everything, decides nothing)
opens a session kept in the store; the browser holds only the session's secret, in an HttpOnly,
SameSite=Strict cookie, and every form carries the session's CSRF token. Wrong keys are
rate-limited per client address."""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth import key_digest
from gateway.store.schema import console_sessions

Role = Literal["admin", "viewer"]
COOKIE = "tiergate_console"
MAX_FAILURES = 5  # wrong keys from one address per FAILURE_WINDOW_S before it must wait
FAILURE_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Session:
    role: Role
    csrf: str

    @property
    def may_decide(self) -> bool:
        return self.role == "admin"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Keys:
    """Who a presented key is: the admin, a viewer, or nobody (compared in constant time)."""

    def __init__(self, admin: bytes | None, viewers: Sequence[bytes]) -> None:
        self._admin = admin
        self._viewers = tuple(viewers)

    def role_of(self, key: str) -> Role | None:
        presented = key_digest(key)
        role: Role | None = None
        if self._admin is not None and hmac.compare_digest(presented, self._admin):
            role = "admin"
        for viewer in self._viewers:
            if hmac.compare_digest(presented, viewer) and role is None:
                role = "viewer"
        return role


class Throttle:
    """Wrong keys per client address: after MAX_FAILURES in FAILURE_WINDOW_S, it waits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, collections.deque[float]] = {}

    def wait_s(self, address: str) -> float:
        failures = self._failures.get(address)
        if not failures:
            return 0.0
        now = self._clock()
        while failures and failures[0] <= now - FAILURE_WINDOW_S:
            failures.popleft()
        if len(failures) < MAX_FAILURES:
            return 0.0
        return failures[0] + FAILURE_WINDOW_S - now

    def failed(self, address: str) -> None:
        if len(self._failures) > 10_000:  # bounded: forget the oldest addresses
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(address, collections.deque()).append(self._clock())


class Sessions:
    """Console sessions in the store, so any worker (or gateway) knows a login."""

    def __init__(
        self, engine: AsyncEngine, lifetime_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._lifetime_s = lifetime_s
        self._clock = clock

    async def open(self, role: Role) -> tuple[str, Session]:
        """A new session: its secret (for the cookie) and what it may do."""
        secret = secrets.token_urlsafe(32)
        session = Session(role, secrets.token_urlsafe(24))
        now = self._clock()
        async with self._engine.begin() as conn:
            await conn.execute(delete(console_sessions).where(console_sessions.c.expires < now))
            await conn.execute(
                insert(console_sessions).values(
                    digest=_digest(secret),
                    role=role,
                    csrf=session.csrf,
                    created=now,
                    expires=now + self._lifetime_s,
                )
            )
        return secret, session

    async def find(self, secret: str | None) -> Session | None:
        if not secret:
            return None
        c = console_sessions.c
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(c.role, c.csrf).where(c.digest == _digest(secret), c.expires > self._clock())
                )
            ).first()
        return None if row is None else Session(row.role, row.csrf)

    async def close(self, secret: str | None) -> None:
        if not secret:
            return
        async with self._engine.begin() as conn:
            await conn.execute(delete(console_sessions).where(console_sessions.c.digest == _digest(secret)))
