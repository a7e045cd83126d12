"""The Redis ledger: exact across any number of gateway processes and machines.

Every reservation is one EVALSHA of `lua/reserve.lua`, which checks and holds all of a request's
limits atomically with Redis's own clock. Keys carry a hash tag (the agent's team if it has one,
else the agent), so each script touches keys of one slot and runs unchanged on Redis Cluster.

Settling is off the request's path: `settle` queues the settlement and returns a future at once;
the ledger's own flusher sends every settlement that fell due together in one pipeline (one
round trip for the lot), so no request waits for it and no client that leaves can cancel it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from budgets.leases import Amounts, LeaseTerms
from budgets.ledger import StateError
from budgets.policy import BudgetPolicy, Denied, Estimate, Limit, Reservation, WindowUsage, denied
from budgets.redis_client import StateClient


def load_script(name: str) -> str:
    """A ledger script with the shared period helpers in front of it."""
    folder = Path(__file__).with_name("lua")
    return (folder / "periods.lua").read_text() + "\n" + (folder / name).read_text()


log = logging.getLogger("tiergate.budget")


class _Script:
    """A Lua script run by EVALSHA directly: cheaper than redis-py's Script wrapper."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Due:
    """A settlement waiting for the next pipeline."""

    agent: str
    reservation_id: str
    tokens: int
    micro: int
    done: asyncio.Future[None]


class RedisLedger:
    remote = True

    def __init__(
        self,
        client: StateClient,
        policies: Mapping[str, BudgetPolicy],
        subjects_of: Mapping[str, tuple[str, ...]],
        tags: Mapping[str, str],
        prefix: str = "tg",
    ) -> None:
        self._client = client
        self._policies = dict(policies)
        self._subjects_of = dict(subjects_of)
        self._prefix = prefix
        self._reserve = _Script(load_script("reserve.lua"))
        self._settle = _Script(load_script("settle.lua"))
        self._usage = _Script(load_script("usage.lua"))
        self._lease = _Script(load_script("lease.lua"))
        self._lease_settle = _Script(load_script("lease_settle.lua"))
        # Everything an agent's reservation touches, worked out once: (subject, limit, key).
        self._plan: dict[str, list[tuple[str, Limit, str]]] = {}
        self._tags = {agent: tags.get(agent, f"agent:{agent}") for agent in self._subjects_of}
        self._ids = itertools.count()
        self._id_prefix = secrets.token_hex(6)
        self._pending: set[asyncio.Task[None]] = set()
        self._loading: dict[str, asyncio.Future[Any]] = {}  # script sha -> its load under way
        self._due: list[_Due] = []  # settlements queued for the next pipeline
        self._flusher: asyncio.Task[None] | None = None
        for agent, subjects in self._subjects_of.items():
            tag = self._tags[agent]
            self._plan[agent] = [
                (subject, limit, f"{prefix}:{{{tag}}}:{subject}:{limit.key}")
                for subject in subjects
                for limit in self._policies[subject].limits
            ]
        # The per-agent parts of every reservation call, encoded once.
        self._keys = {agent: [key for _, _, key in plan] for agent, plan in self._plan.items()}
        self._limit_args: dict[str, list[bytes]] = {
            agent: [
                str(part).encode()
                for _, limit, _ in plan
                for part in (
                    limit.window,
                    limit.metric,
                    limit.limit,
                    -1 if limit.warn is None else limit.warn,
                )
            ]
            for agent, plan in self._plan.items()
        }

    async def _call(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        try:
            try:
                return await self._client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:  # a restarted or failed-over Redis: load it, once, and go on
                await self._load(script)
                return await self._client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except (RedisError, RedisClusterException) as exc:
            raise StateError(f"{type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise StateError("Redis did not answer in time") from None
        except (RuntimeError, AttributeError) as exc:
            # a connection the cluster client closed under the call (after another call's
            # connection error it closes them all): the state is unreachable for this call
            raise StateError(f"Redis connection lost: {type(exc).__name__}: {exc}") from None

    async def _load(self, script: _Script) -> None:
        """Load a script Redis has lost; the calls that meet NOSCRIPT together share one load (a
        burst of loads on every primary at once has broken a cluster client's connections)."""
        loading = self._loading.get(script.sha)
        if loading is None:
            loading = asyncio.ensure_future(self._client.script_load(script.source))
            self._loading[script.sha] = loading
            loading.add_done_callback(lambda _: self._loading.pop(script.sha, None))
        await asyncio.shield(loading)

    async def load_scripts(self) -> None:
        """Load the scripts (on every primary of a cluster) before the first request needs them,
        so a burst does not meet NOSCRIPT everywhere at once."""
        try:
            for script in (self._reserve, self._settle, self._usage, self._lease, self._lease_settle):
                await self._client.script_load(script.source)
        except (RedisError, RedisClusterException, TimeoutError, RuntimeError) as exc:
            log.warning(
                "budget scripts not loaded yet (%s); they are loaded on first use", type(exc).__name__
            )

    async def reserve(self, agent: str, estimate: Estimate) -> Reservation | Denied:
        plan = self._plan.get(agent, [])
        if not plan:
            granted = estimate.max_completion_tokens
            return Reservation(
                agent=agent,
                subjects=(),
                prompt_tokens=estimate.prompt_tokens,
                completion_tokens=granted,
                micro_usd=estimate.cost(estimate.prompt_tokens, granted),
            )
        reservation_id = f"{self._id_prefix}{next(self._ids):x}"
        keys = [*self._keys[agent], *self._markers(agent, reservation_id)]
        args: list[Any] = [
            estimate.prompt_tokens,
            estimate.max_completion_tokens,
            repr(estimate.input_micro_usd_per_token),
            repr(estimate.output_micro_usd_per_token),
            repr(estimate.keep_share),
            *self._limit_args[agent],
        ]
        try:
            result = await self._call(self._reserve, keys, args)
        except StateError:
            # The script may still run once Redis answers (a frozen server keeps what it was sent):
            # take it back in the background, or block it if it has not arrived yet.
            self._compensate(agent, reservation_id, 0, 0, cancel=True)
            raise
        if int(result[0]) == 0:
            if int(result[1]) == 0:  # cancelled before it arrived (see settle.lua)
                raise StateError("the reservation was cancelled before Redis ran it")
            subject, limit, _ = plan[int(result[1]) - 1]
            use = (int(result[2]), int(result[4]), int(result[5]))
            return denied(subject, limit, use, max(0.0, float(result[3])), estimate)
        remaining = int(result[3])
        # (the periods held are kept in Redis, in the reservation's marker, for settling)
        crossed = tuple(
            WindowUsage(subject, limit.window, limit.metric, limit.warn or 0, limit.limit, 0.0)
            for subject, limit, _ in (plan[int(index) - 1] for index in result[4 + len(plan) :])
        )
        return Reservation(
            agent=agent,
            subjects=self._subjects_of.get(agent, ()),
            prompt_tokens=estimate.prompt_tokens,
            completion_tokens=int(result[1]),
            micro_usd=int(result[2]),
            remaining_tokens=None if remaining < 0 else remaining,
            crossed=crossed,
            id=reservation_id,
        )

    async def cancel(self, reservation: Reservation) -> None:
        """Take a reservation back whole (its request too), as if it had not been made."""
        if not reservation.id:
            return
        keys, args = self._settle_call(reservation.agent, reservation.id, 0, 0, cancel=True)
        try:
            await self._call(self._settle, keys, args)
        except StateError:
            self._compensate(reservation.agent, reservation.id, 0, 0, cancel=True)

    async def take_lease(
        self, agent: str, asked: Amounts, least: Amounts, share: float, keep_share: float
    ) -> LeaseTerms | float:
        """Hold a slice of each of the agent's limits for this process: the terms, or (when no
        slice worth taking fits) the seconds until the earliest of its periods ends."""
        plan = self._plan.get(agent, [])
        lease_id = f"L{self._id_prefix}{next(self._ids):x}"
        keys = [*self._keys[agent], *self._markers(agent, lease_id)]
        args: list[Any] = [*asked, *least, repr(share), repr(keep_share), *self._limit_args[agent]]
        try:
            result = await self._call(self._lease, keys, args)
        except StateError:
            self._compensate_lease(agent, lease_id)
            raise
        if int(result[0]) == 0:
            return float(result[1])
        tokens, usd, requests, remaining = (
            int(part) for part in (result[1], result[2], result[3], result[5])
        )
        crossed = tuple(
            WindowUsage(subject, limit.window, limit.metric, limit.warn or 0, limit.limit, 0.0)
            for subject, limit, _ in (plan[int(index) - 1] for index in result[6:])
        )
        return LeaseTerms(
            id=lease_id,
            granted=Amounts(tokens, usd, requests),
            lasts_s=float(result[4]),
            remaining_tokens=None if remaining < 0 else remaining,
            crossed=crossed,
        )

    async def settle_lease(self, agent: str, lease_id: str, spent: Amounts, keep: Amounts, last: bool) -> str:
        """Charge what a lease's grants spent; unless `last`, keep holding `keep` (the holds of its
        requests in flight) under the id returned. Safe to repeat: it applies once (and returns
        the same id)."""
        following = f"{lease_id}n"
        keys, args = self._lease_settle_call(agent, lease_id, following, spent, keep, 1 if last else 0)
        await self._call(self._lease_settle, keys, args)
        return following

    def _lease_settle_call(
        self, agent: str, lease_id: str, following: str, spent: Amounts, keep: Amounts, mode: int
    ) -> tuple[list[str], list[Any]]:
        plan = self._plan.get(agent, [])
        keys = [*self._keys[agent], *self._markers(agent, lease_id), self._markers(agent, following)[0]]
        args: list[Any] = [*spent, keep.tokens, keep.usd, mode, *(limit.metric for _, limit, _ in plan)]
        return keys, args

    def _compensate_lease(self, agent: str, lease_id: str) -> None:
        """Cancel a lease whose taking timed out (it may still arrive: the tombstone stops it)."""
        nothing = Amounts(0, 0, 0)
        keys, args = self._lease_settle_call(agent, lease_id, lease_id, nothing, nothing, 2)
        self._retry_in_background(self._lease_settle, keys, args, lease_id)

    def _markers(self, agent: str, reservation_id: str) -> list[str]:
        tag = self._tags.get(agent, f"agent:{agent}")
        return [
            f"{self._prefix}:{{{tag}}}:res:{reservation_id}",
            f"{self._prefix}:{{{tag}}}:tomb:{reservation_id}",
        ]

    def _settle_call(
        self, agent: str, reservation_id: str, tokens: int, micro: int, cancel: bool
    ) -> tuple[list[str], list[Any]]:
        plan = self._plan.get(agent, [])
        keys = [key for _, _, key in plan] + self._markers(agent, reservation_id)
        args: list[Any] = [tokens, micro, 1 if cancel else 0, *(limit.metric for _, limit, _ in plan)]
        return keys, args

    def _compensate(self, agent: str, reservation_id: str, tokens: int, micro: int, cancel: bool) -> None:
        """Settle (or cancel) in the background until Redis answers; safe to repeat (idempotent)."""
        keys, args = self._settle_call(agent, reservation_id, tokens, micro, cancel)
        self._retry_in_background(self._settle, keys, args, reservation_id)

    def _retry_in_background(self, script: _Script, keys: list[str], args: list[Any], what: str) -> None:
        """Run an idempotent settling script until Redis takes it (about ten minutes at most)."""

        async def keep_trying() -> None:
            delay = 0.1
            for _ in range(200):
                await asyncio.sleep(delay)
                try:
                    await self._call(script, keys, args)
                    return
                except StateError:
                    delay = min(3.0, delay * 2)
            log.error("gave up settling reservation %s after Redis stayed unreachable", what)

        task = asyncio.ensure_future(keep_trying())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def settle(self, reservation: Reservation, tokens: int, micro_usd: int) -> asyncio.Future[None]:
        """Queue the settlement; the future is done once Redis has applied it. A settlement Redis
        could not take (StateError) is retried in the background until it can: never lost."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not reservation.id:
            done.set_result(None)  # an agent without limits: nothing was held
            return done
        self._due.append(_Due(reservation.agent, reservation.id, tokens, micro_usd, done))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return done

    async def _flush(self) -> None:
        """Send what is due, all of it in one pipeline; what falls due meanwhile goes next."""
        try:
            while self._due:
                due, self._due = self._due, []
                outcomes = await self._send(
                    [self._settle_call(d.agent, d.reservation_id, d.tokens, d.micro, False) for d in due]
                )
                for item, outcome in zip(due, outcomes, strict=True):
                    if outcome is not None:
                        self._compensate(item.agent, item.reservation_id, item.tokens, item.micro, False)
                    if item.done.done():  # its waiter gave up on it; the settlement went all the same
                        continue
                    if outcome is None:
                        item.done.set_result(None)
                    else:
                        item.done.set_exception(outcome)
        finally:
            self._flusher = None

    async def _send(self, calls: list[tuple[list[str], list[Any]]]) -> list[StateError | None]:
        """Run the settle script for each call, in one round trip; each one's error or None."""
        if len(calls) == 1:
            keys, args = calls[0]
            try:
                await self._call(self._settle, keys, args)
                return [None]
            except StateError as exc:
                return [exc]
        try:
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self._settle.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        except (RedisError, RedisClusterException, TimeoutError, RuntimeError, AttributeError) as exc:
            return [StateError(f"{type(exc).__name__}: {exc}")] * len(calls)
        outcomes: list[StateError | None] = []
        for (keys, args), result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):  # a restarted Redis: _call loads the script
                try:
                    await self._call(self._settle, keys, args)
                    result = None
                except StateError as exc:
                    result = exc
            elif isinstance(result, Exception):
                result = StateError(f"{type(result).__name__}: {result}")
            outcomes.append(result if isinstance(result, StateError) else None)
        return outcomes

    async def settled(self) -> None:
        """Wait until every settlement queued so far has been sent and answered."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def usage(self, agent: str) -> list[WindowUsage]:
        plan = self._plan.get(agent, [])
        if not plan:
            return []
        await self.settled()  # this worker's own settlements are read back
        result = await self._call(
            self._usage, [key for _, _, key in plan], [limit.window for _, limit, _ in plan]
        )
        return [
            WindowUsage(
                subject, limit.window, limit.metric, int(result[2 * i]), limit.limit, float(result[2 * i + 1])
            )
            for i, (subject, limit, _) in enumerate(plan)
        ]

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        # the client is shared, and closed by whoever created it; settlements still owed get a
        # short last chance (what is left stays held until its window ends: never an overspend)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settled(), timeout=2)
        if self._pending:
            await asyncio.wait(self._pending, timeout=2)
            for task in self._pending:
                task.cancel()
