"""The Ledger interface: reserve an upper bound before a call, settle with actual usage after it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from budgets.policy import Denied, Estimate, Reservation, WindowUsage


class StateError(Exception):
    """The ledger's storage could not be reached or did not answer in time."""


class Ledger(Protocol):
    remote: bool  # kept in a service that can fail or stall (StateError), not in this process

    async def reserve(self, agent: str, estimate: Estimate) -> Reservation | Denied:
        """Atomically check every limit of the agent (and its team) and hold the estimate."""
        ...

    def settle(self, reservation: Reservation, tokens: int, micro_usd: int) -> Awaitable[None]:
        """Replace the held estimate with what was actually spent. A remote ledger queues it at
        once and applies it shortly after (the awaitable is done then): the settlement is the
        ledger's from the call on, whatever becomes of the request."""
        ...

    async def usage(self, agent: str) -> list[WindowUsage]: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
