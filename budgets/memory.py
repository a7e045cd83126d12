"""The in-process ledger: exact for one process, because nothing awaits between check and hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from budgets.policy import (
    BudgetPolicy,
    Denied,
    Estimate,
    Limit,
    Reservation,
    WindowUsage,
    affordable_completion,
    denied,
    period,
)


class MemoryLedger:
    remote = False

    def __init__(
        self,
        policies: Mapping[str, BudgetPolicy],
        subjects_of: Mapping[str, tuple[str, ...]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policies = dict(policies)
        self._subjects_of = dict(subjects_of)
        self._clock = clock
        # (subject, limit key) -> (period number, amount used in that period, of which held by
        # reservations in flight, and how many they are)
        self._used: dict[tuple[str, str], tuple[int, int, int, int]] = {}
        # Each agent's limits (its own, then its team's), worked out once.
        self._limits_of = {
            agent: [(subject, limit) for subject in subjects for limit in self._policies[subject].limits]
            for agent, subjects in self._subjects_of.items()
        }

    def carry_over(self, previous: MemoryLedger) -> None:
        """Take over what an earlier ledger (of a config being reloaded) has counted."""
        self._used = previous._used

    def _limits(self, agent: str) -> list[tuple[str, Limit]]:
        return self._limits_of.get(agent, [])

    def _current(self, subject: str, limit: Limit, now: float) -> tuple[int, tuple[int, int, int], float]:
        number, ends = period(limit.window, now)
        stored = self._used.get((subject, limit.key))
        used = stored[1:] if stored is not None and stored[0] == number else (0, 0, 0)
        return number, used, ends

    async def reserve(self, agent: str, estimate: Estimate) -> Reservation | Denied:
        now = self._clock()
        limits = self._limits(agent)
        state: list[tuple[str, Limit, int, tuple[int, int, int], float]] = [
            (subject, limit, *self._current(subject, limit, now)) for subject, limit in limits
        ]
        granted, blocked = affordable_completion([(limit, use[0]) for _, limit, _, use, _ in state], estimate)
        if blocked is not None:
            subject, limit, _, use, ends = next(s for s in state if s[1] is blocked[0])
            return denied(subject, limit, use, max(0.0, ends - now), estimate)
        cost = estimate.cost(estimate.prompt_tokens, granted)
        amounts = {"tokens": estimate.prompt_tokens + granted, "usd": cost, "requests": 1}
        periods: dict[str, int] = {}
        remaining: int | None = None
        crossed: list[WindowUsage] = []
        for subject, limit, number, (used, held, in_flight), ends in state:
            amount = amounts[limit.metric]
            new_used = used + amount
            if limit.metric == "requests":  # a request counts once it is made: nothing is held
                self._used[(subject, limit.key)] = (number, new_used, 0, 0)
            else:
                self._used[(subject, limit.key)] = (number, new_used, held + amount, in_flight + 1)
            if limit.warn is not None and used < limit.warn <= new_used:
                crossed.append(WindowUsage(subject, limit.window, limit.metric, new_used, limit.limit, ends))
            periods[f"{subject}|{limit.key}"] = number
            if limit.metric == "tokens":
                left = limit.limit - new_used
                remaining = left if remaining is None else min(remaining, left)
        return Reservation(
            agent=agent,
            subjects=self._subjects_of.get(agent, ()),
            prompt_tokens=estimate.prompt_tokens,
            completion_tokens=granted,
            micro_usd=cost,
            periods=periods,
            remaining_tokens=remaining,
            crossed=tuple(crossed),
        )

    def settle(self, reservation: Reservation, tokens: int, micro_usd: int) -> Awaitable[None]:
        """Applied at once, in this process; the awaitable is already done."""
        self._apply(reservation, tokens, micro_usd)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _apply(self, reservation: Reservation, tokens: int, micro_usd: int) -> None:
        held = {"tokens": reservation.tokens, "usd": reservation.micro_usd}
        spent = {"tokens": tokens, "usd": micro_usd}
        for subject, limit in self._limits(reservation.agent):
            if limit.metric == "requests":
                continue
            number = reservation.periods.get(f"{subject}|{limit.key}")
            stored = self._used.get((subject, limit.key))
            if number is None or stored is None or stored[0] != number:
                continue  # that period has ended; nothing to correct
            _, used, holding, in_flight = stored
            amount = held[limit.metric]
            self._used[(subject, limit.key)] = (
                number,
                max(0, used + spent[limit.metric] - amount),
                max(0, holding - amount),
                max(0, in_flight - 1),
            )

    async def usage(self, agent: str) -> list[WindowUsage]:
        now = self._clock()
        out = []
        for subject, limit in self._limits(agent):
            _, (used, _, _), ends = self._current(subject, limit, now)
            out.append(WindowUsage(subject, limit.window, limit.metric, used, limit.limit, ends))
        return out

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
