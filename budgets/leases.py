"""Budget leases: a gateway process holds a slice of an agent's budget in Redis and grants that
agent's requests from it in process, without a round trip, then settles the slice as a whole.

A lease is a reservation like any other, only larger: Redis grants it atomically against every
limit of the agent and its team, so what the processes grant from their leases never adds up to
more than the limits (never an overspend). It is small by construction: at most `share` of what
each limit has left, asked for only by an agent busy in this process (`min_requests` within
`ttl_s`), sized to about two lifetimes of that agent's recent use here, and settled after `ttl_s`
(sooner when its period ends): what its grants spent is charged, what its requests still in
flight hold stays held until they settle, the rest is free again. So near a limit leases shrink
to nothing and every request reserves in Redis as before; a request this process would refuse
(or cut short) while its own leases hold room first gives that room back and asks again, and a
request refused for room another process's lease holds is told the budget is contended (it waits
for the room, which returns within `ttl_s`), not spent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from budgets.ledger import StateError
from budgets.policy import Denied, Estimate, Reservation, WindowUsage

log = logging.getLogger("tiergate.budget")

UNLIMITED = -1  # an amount of a metric the agent has no limit on


class Amounts(NamedTuple):
    tokens: int
    usd: int  # micro-dollars
    requests: int


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """What Redis granted: an amount of each metric (UNLIMITED where there is no limit)."""

    id: str
    granted: Amounts
    lasts_s: float  # until the earliest of its periods ends
    remaining_tokens: int | None  # the tightest token window's room after the lease
    crossed: tuple[WindowUsage, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    ttl_s: float = 0.5
    share: float = 1 / 16  # of each limit's room, at most, in one lease
    min_requests: int = 4  # of an agent's requests within ttl_s before this process leases for it


class LeaseStore(Protocol):
    """The remote side of leases (the Redis ledger)."""

    async def reserve(self, agent: str, estimate: Estimate) -> Reservation | Denied: ...

    def settle(self, reservation: Reservation, tokens: int, micro_usd: int) -> Awaitable[None]: ...

    async def cancel(self, reservation: Reservation) -> None: ...

    async def take_lease(
        self, agent: str, asked: Amounts, least: Amounts, share: float, keep_share: float
    ) -> LeaseTerms | float: ...

    async def settle_lease(
        self, agent: str, lease_id: str, spent: Amounts, keep: Amounts, last: bool
    ) -> str: ...

    async def usage(self, agent: str) -> list[WindowUsage]: ...

    async def ping(self) -> bool: ...

    async def load_scripts(self) -> None: ...

    async def close(self) -> None: ...


GIVE_BACK_WAIT_S = 2.0  # the longest a request or a usage read waits for leases to give room back


class Lease:
    """One lease's state in this process: what it holds, what its grants hold and have spent."""

    __slots__ = (
        "agent",
        "began",
        "crossed",
        "expires",
        "held_tokens",
        "held_usd",
        "id",
        "idle",
        "in_flight",
        "limit",
        "made",
        "remaining_tokens",
        "retired",
        "returned",
        "spent_tokens",
        "spent_usd",
        "subjects",
        "used",
    )

    def __init__(self, agent: str, subjects: tuple[str, ...], terms: LeaseTerms, expires: float) -> None:
        self.agent = agent
        self.subjects = subjects
        self.id = terms.id
        self.limit = terms.granted
        self.remaining_tokens = terms.remaining_tokens
        self.crossed = terms.crossed  # reported with the first grant
        self.began = time.monotonic()
        self.expires = expires
        self.held_tokens = self.held_usd = 0  # by its grants in flight
        self.spent_tokens = self.spent_usd = 0  # by its grants settled (since its last settlement)
        self.made = 0  # requests granted (since its last settlement)
        self.used = [0, 0, 0]  # tokens, micro-dollars and requests granted over its life
        self.in_flight = 0
        self.retired = False
        self.idle = asyncio.Event()  # set while no grant of it is in flight
        self.idle.set()
        self.returned = asyncio.Event()  # set once its unused room is free again in Redis

    def room(self) -> tuple[int, int]:
        """Tokens and micro-dollars it can still grant (meaningless where UNLIMITED)."""
        return (
            self.limit.tokens - self.held_tokens - self.spent_tokens,
            self.limit.usd - self.held_usd - self.spent_usd,
        )

    def has_room(self) -> bool:
        tokens, usd = self.room()
        return (
            (self.limit.tokens == UNLIMITED or tokens > 0)
            and (self.limit.usd == UNLIMITED or usd > 0)
            and (self.limit.requests == UNLIMITED or self.made < self.limit.requests)
        )

    def grant(self, estimate: Estimate, now: float) -> Reservation | None:
        """The whole estimate from this lease, or None: it does not fit (or the lease is over)."""
        if self.retired or now >= self.expires:
            return None
        completion = 0 if estimate.free else estimate.max_completion_tokens
        tokens = estimate.prompt_tokens + completion
        usd = estimate.cost(estimate.prompt_tokens, completion)
        room_tokens, room_usd = self.room()
        if (
            (self.limit.tokens != UNLIMITED and tokens > room_tokens)
            or (self.limit.usd != UNLIMITED and usd > room_usd)
            or (self.limit.requests != UNLIMITED and self.made >= self.limit.requests)
        ):
            return None
        self.held_tokens += tokens
        self.held_usd += usd
        self.made += 1
        self.in_flight += 1
        self.used[0] += tokens
        self.used[1] += usd
        self.used[2] += 1
        self.idle.clear()
        remaining = None
        if self.remaining_tokens is not None:
            remaining = self.remaining_tokens + (
                room_tokens - tokens if self.limit.tokens != UNLIMITED else 0
            )
        crossed, self.crossed = self.crossed, ()
        return Reservation(
            agent=self.agent,
            subjects=self.subjects,
            prompt_tokens=estimate.prompt_tokens,
            completion_tokens=completion,
            micro_usd=usd,
            remaining_tokens=remaining,
            crossed=crossed,
            lease=self,
        )

    def running_low(self, now: float) -> bool:
        """Past half its life or half its room: time to ask for the next one."""
        if now - self.began > (self.expires - self.began) / 2:
            return True
        tokens, usd = self.room()
        return (
            (self.limit.tokens != UNLIMITED and tokens * 2 < self.limit.tokens)
            or (self.limit.usd != UNLIMITED and usd * 2 < self.limit.usd)
            or (self.limit.requests != UNLIMITED and self.made * 2 > self.limit.requests)
        )

    def settle(self, reservation: Reservation, tokens: int, micro_usd: int) -> None:
        """A grant of this lease is done: its hold becomes what it spent."""
        self.held_tokens -= reservation.tokens
        self.held_usd -= reservation.micro_usd
        self.spent_tokens += tokens
        self.spent_usd += micro_usd
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    def take_settlement(self, last: bool) -> tuple[Amounts, Amounts]:
        """What to charge now (spent, requests made) and what to keep holding; from here on the
        lease holds only that and counts afresh."""
        spent = Amounts(self.spent_tokens, self.spent_usd, self.made)
        keep = Amounts(0, 0, 0) if last else Amounts(self.held_tokens, self.held_usd, 0)
        self.spent_tokens = self.spent_usd = self.made = 0
        self.limit = Amounts(
            keep.tokens if self.limit.tokens != UNLIMITED else UNLIMITED,
            keep.usd if self.limit.usd != UNLIMITED else UNLIMITED,
            0 if self.limit.requests != UNLIMITED else UNLIMITED,
        )
        return spent, keep


class LeasingLedger:
    """A Redis ledger whose busy agents are granted from leases in process (the Ledger protocol)."""

    remote = True

    def __init__(
        self, store: LeaseStore, subjects_of: Mapping[str, tuple[str, ...]], settings: LeaseSettings
    ) -> None:
        """`subjects_of`: the agents with limits, and whose budgets (their own, their team's) they draw on."""
        self._store = store
        self._subjects_of = dict(subjects_of)
        self._settings = settings
        self._leases: dict[str, Lease] = {}  # agent -> the lease it is granted from
        self._returning: set[Lease] = set()  # retired, unused room not yet free in Redis
        self._asking: dict[str, asyncio.Task[None]] = {}  # agent -> its lease being taken
        self._seen: dict[str, tuple[float, int]] = {}  # agent -> (since, requests seen since)
        self._quiet_until: dict[str, float] = {}  # agent -> no lease asked before then
        self._use_per_s: dict[str, tuple[float, float, float]] = {}  # agent -> its last lease's use
        self._tasks: set[asyncio.Task[None]] = set()

    async def reserve(self, agent: str, estimate: Estimate) -> Reservation | Denied:
        now = time.monotonic()
        lease = self._leases.get(agent)
        if lease is not None and estimate.keep_share == 0:  # background work reserves in Redis
            granted = lease.grant(estimate, now)
            if granted is not None:
                if lease.running_low(now):
                    self._ask(agent, estimate, now)
                return granted
        outcome = await self._store.reserve(agent, estimate)
        if self._short(outcome, estimate):
            outcome = await self._again_without_leases(agent, estimate, outcome)
        if self._busy(agent, now):
            self._ask(agent, estimate, now)
        return outcome

    def settle(self, reservation: Reservation, tokens: int, micro_usd: int) -> Awaitable[None]:
        lease = reservation.lease
        if not isinstance(lease, Lease):
            return self._store.settle(reservation, tokens, micro_usd)
        lease.settle(reservation, tokens, micro_usd)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def usage(self, agent: str) -> list[WindowUsage]:
        """Usage as Redis has it, after this process's leases on it have given back their room."""
        await self._give_back(self._subjects_of.get(agent, ()))
        return await self._store.usage(agent)

    async def ping(self) -> bool:
        return await self._store.ping()

    async def load_scripts(self) -> None:
        await self._store.load_scripts()

    async def close(self) -> None:
        """Give back every lease (after those being taken arrive), then close the store."""
        if self._asking:
            await asyncio.wait(list(self._asking.values()), timeout=GIVE_BACK_WAIT_S)
        for lease in list(self._leases.values()):
            self._retire(lease)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=GIVE_BACK_WAIT_S)
        await self._store.close()

    def _short(self, outcome: Reservation | Denied, estimate: Estimate) -> bool:
        """Refused, or granted less completion than asked: leases' room might have made up for it."""
        if isinstance(outcome, Denied):
            return True
        return not estimate.free and outcome.completion_tokens < estimate.max_completion_tokens

    async def _again_without_leases(
        self, agent: str, estimate: Estimate, outcome: Reservation | Denied
    ) -> Reservation | Denied:
        """Give back the room this process's leases hold on the agent's budgets, then reserve again:
        a process never refuses (or cuts short) a request for room its own leases hold."""
        subjects = self._subjects_of.get(agent, ())
        if not await self._give_back(subjects):
            return outcome
        if isinstance(outcome, Reservation):
            await self._store.cancel(outcome)
        return await self._store.reserve(agent, estimate)

    async def _give_back(self, subjects: tuple[str, ...]) -> bool:
        """Retire the leases on any of `subjects` and wait until their unused room is free in
        Redis (leases being taken are waited for first). Whether there was any."""
        shared = set(subjects)
        asking = [task for agent, task in self._asking.items() if shared & set(self._subjects_of[agent])]
        if asking:
            await asyncio.wait(asking, timeout=GIVE_BACK_WAIT_S)
        for lease in list(self._leases.values()):
            if shared & set(lease.subjects):
                self._retire(lease)
        returning = [lease for lease in self._returning if shared & set(lease.subjects)]
        if returning:
            waits = [asyncio.ensure_future(lease.returned.wait()) for lease in returning]
            _, late = await asyncio.wait(waits, timeout=GIVE_BACK_WAIT_S)
            for wait in late:  # Redis is slow to take them: the room stays held a little longer
                wait.cancel()
        return bool(returning)

    def _busy(self, agent: str, now: float) -> bool:
        """Whether the agent has made enough requests here lately to be worth a lease."""
        if agent not in self._subjects_of:  # no limits: nothing to lease
            return False
        since, seen = self._seen.get(agent, (now, 0))
        if now - since > self._settings.ttl_s:
            since, seen = now, 0
        self._seen[agent] = (since, seen + 1)
        return seen + 1 >= self._settings.min_requests and now >= self._quiet_until.get(agent, 0.0)

    def _ask(self, agent: str, estimate: Estimate, now: float) -> None:
        """Take a lease for the agent in the background, unless one is being taken."""
        if agent in self._asking or now < self._quiet_until.get(agent, 0.0):
            return
        task = asyncio.ensure_future(self._take(agent, estimate))
        self._asking[agent] = task
        task.add_done_callback(lambda _: self._asking.pop(agent, None))

    async def _take(self, agent: str, estimate: Estimate) -> None:
        settings = self._settings
        completion = 0 if estimate.free else estimate.max_completion_tokens
        need = Amounts(
            estimate.prompt_tokens + completion, estimate.cost(estimate.prompt_tokens, completion), 1
        )
        use = self._use_per_s.get(agent, (0.0, 0.0, 0.0))
        asked = Amounts(
            *(max(8 * n, math.ceil(2 * settings.ttl_s * u)) for n, u in zip(need, use, strict=True))
        )
        least = Amounts(2 * need.tokens, 2 * need.usd, 2)
        try:
            terms = await self._store.take_lease(agent, asked, least, settings.share, 0.0)
        except StateError:
            self._quiet_until[agent] = time.monotonic() + settings.ttl_s
            return
        now = time.monotonic()
        if not isinstance(terms, LeaseTerms):  # no lease worth taking fits
            self._quiet_until[agent] = now + min(settings.ttl_s, max(0.0, terms))
            return
        lasts = min(settings.ttl_s, terms.lasts_s - 0.05)
        lease = Lease(agent, self._subjects_of.get(agent, ()), terms, now + max(0.0, lasts))
        previous = self._leases.get(agent)
        self._leases[agent] = lease
        if previous is not None:
            self._retire(previous)
        asyncio.get_running_loop().call_later(max(0.0, lasts), self._retire, lease)

    def _retire(self, lease: Lease) -> None:
        """Grant no more from it, and give back its unused room (in the background)."""
        if lease.retired:
            return
        lease.retired = True
        if self._leases.get(lease.agent) is lease:
            del self._leases[lease.agent]
        life = max(0.05, time.monotonic() - lease.began)
        tokens, usd, requests = lease.used
        self._use_per_s[lease.agent] = (tokens / life, usd / life, requests / life)
        self._returning.add(lease)
        task = asyncio.ensure_future(self._settle_lease(lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle_lease(self, lease: Lease) -> None:
        """Charge what it spent and free its unused room now; what its requests in flight hold is
        settled once they are done."""
        try:
            if lease.in_flight:
                spent, keep = lease.take_settlement(last=False)
                lease.id = await self._until_taken(lease, spent, keep, last=False)
                lease.returned.set()
                await lease.idle.wait()
            spent, keep = lease.take_settlement(last=True)
            await self._until_taken(lease, spent, keep, last=True)
        finally:
            lease.returned.set()
            self._returning.discard(lease)

    async def _until_taken(self, lease: Lease, spent: Amounts, keep: Amounts, last: bool) -> str:
        """Settle the lease in Redis, retrying until it answers (the settlement applies once);
        given up after about ten minutes: its room then stays held until its periods end."""
        delay = 0.1
        for _ in range(200):
            try:
                return await self._store.settle_lease(lease.agent, lease.id, spent, keep, last)
            except StateError:
                await asyncio.sleep(delay)
                delay = min(3.0, delay * 2)
        log.error("gave up settling budget lease %s after Redis stayed unreachable", lease.id)
        return lease.id
