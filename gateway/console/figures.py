"""The console's figures, summed in SQL from the rollups (per minute for the last hour, per hour
for a day or a week), so a page costs about the same with a thousand decisions stored or a million."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, Table, cast, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.rollups import CONFIDENCE, LATENCY, MONEY, SUMS, percentile
from gateway.store.schema import decision_hours, decision_minutes

# period -> (how far back, seconds per point of its time series, the rollup read and its slot width)
PERIODS: dict[str, tuple[int, int, Table, int]] = {
    "hour": (3600, 60, decision_minutes, 60),
    "day": (86400, 3600, decision_hours, 3600),
    "week": (7 * 86400, 3 * 3600, decision_hours, 3600),
}
FREE_TIERS = ("rules", "classifier")


@dataclass
class Totals:
    """Sums over some decisions."""

    values: dict[str, float] = field(default_factory=dict)
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY))

    def __getattr__(self, name: str) -> float:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def savings_usd(self) -> float:
        return max(0.0, self.values.get("baseline_usd", 0.0) - self.values.get("cost_usd", 0.0))

    @property
    def cache_rate(self) -> float | None:
        requests = self.values.get("requests", 0)
        return self.values.get("cache_hits", 0) / requests if requests else None

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latency, 0.5)

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latency, 0.95)


def _sums(M: Any) -> list[Any]:
    return [func.coalesce(func.sum(M[name]), 0).label(name) for name in (*SUMS, *MONEY, *LATENCY)]


def _totals(row: Any) -> Totals:
    mapping = row._mapping
    return Totals({name: mapping[name] for name in (*SUMS, *MONEY)}, [int(mapping[name]) for name in LATENCY])


class Figures:
    def __init__(self, engine: AsyncEngine, clock: Any = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def since(self, period: str) -> tuple[Any, int, int, int]:
        """The rollup's columns, the period's first slot in it, the slot's width, and the width of
        the period's points (seconds)."""
        span, step, table, width = PERIODS[period]
        return table.c, int((self._clock() - span) // width), width, step

    async def overview(self, period: str) -> dict[str, Any]:
        M, first, width, step = self.since(period)
        bucket = cast(M.slot * width / step, Integer)
        async with self._engine.connect() as conn:
            totals = _totals((await conn.execute(select(*_sums(M)).where(M.slot >= first))).one())
            tiers = (
                await conn.execute(
                    select(M.tier, func.sum(M.requests))
                    .where(M.slot >= first)
                    .group_by(M.tier)
                    .order_by(func.sum(M.requests).desc())
                )
            ).all()
            points = (
                await conn.execute(
                    select(bucket, M.tier, func.sum(M.requests))
                    .where(M.slot >= first)
                    .group_by(bucket, M.tier)
                    .order_by(bucket)
                )
            ).all()
        return {
            "totals": totals,
            "tiers": [(tier or "none", int(n)) for tier, n in tiers],
            "series": _series(
                list(points), [t for t, _ in tiers], first * width // step, step, self._clock()
            ),
        }

    async def agents(self, period: str) -> dict[str, dict[str, Any]]:
        M, first, _, _ = self.since(period)
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(M.agent, M.tier, *_sums(M)).where(M.slot >= first).group_by(M.agent, M.tier)
                )
            ).all()
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            entry = out.setdefault(row.agent, {"totals": Totals(defaultdict(float)), "tiers": {}})
            totals = _totals(row)
            for name, value in totals.values.items():
                entry["totals"].values[name] += value
            entry["totals"].latency = [
                a + b for a, b in zip(entry["totals"].latency, totals.latency, strict=True)
            ]
            entry["tiers"][row.tier or "none"] = int(totals.values["requests"])
        return out

    async def loops(self, within_s: int = 3600) -> dict[str, int]:
        """Requests stopped as loops in the last `within_s` seconds, per agent (those with any)."""
        M = decision_minutes.c
        first = int((self._clock() - within_s) // 60)
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(M.agent, func.sum(M.loops))
                    .where(M.slot >= first)
                    .group_by(M.agent)
                    .having(func.sum(M.loops) > 0)
                )
            ).all()
        return {agent: int(n) for agent, n in rows}

    async def burn(self, agent: str, since: float, step: int = 3600) -> list[tuple[float, float]]:
        """The agent's tokens used since `since`, cumulative, one point per `step` seconds (a
        multiple of an hour)."""
        M = decision_hours.c
        bucket = cast(M.slot * 3600 / step, Integer)
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(bucket, func.sum(M.prompt_tokens + M.completion_tokens))
                    .where(M.agent == agent, M.slot >= int(since // 3600))
                    .group_by(bucket)
                    .order_by(bucket)
                )
            ).all()
        spent = {int(b): float(tokens or 0) for b, tokens in rows}
        used, points = 0.0, []
        for b in range(int(since // step), int(self._clock() // step) + 1):  # every point, to now
            used += spent.get(b, 0.0)
            points.append((float(b * step + step), used))
        return points

    async def routes(self, period: str) -> dict[str, dict[str, Any]]:
        M, first, _, _ = self.since(period)
        confidence = [func.coalesce(func.sum(M[name]), 0) for name in CONFIDENCE]
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(M.route, M.tier, func.sum(M.requests), *confidence)
                    .where(M.slot >= first)
                    .group_by(M.route, M.tier)
                )
            ).all()
        out: dict[str, dict[str, Any]] = {}
        for route, tier, requests, *histogram in rows:
            entry = out.setdefault(
                route, {"requests": 0, "answered_free": 0, "tiers": {}, "confidence": [0] * len(CONFIDENCE)}
            )
            entry["requests"] += int(requests)
            entry["tiers"][tier or "none"] = int(requests)
            if tier in FREE_TIERS:
                entry["answered_free"] += int(requests)
            entry["confidence"] = [a + int(b) for a, b in zip(entry["confidence"], histogram, strict=True)]
        for entry in out.values():
            entry["coverage"] = entry["answered_free"] / entry["requests"] if entry["requests"] else None
        return out


def _series(points: list[Any], tiers: list[str | None], first: int, step: int, now: float) -> dict[str, Any]:
    """Requests per tier per point, as uPlot takes them: x values, then one list per tier."""
    last = int(now // step)
    xs = list(range(first, last + 1))
    index = {b: i for i, b in enumerate(xs)}
    lines = {tier or "none": [0] * len(xs) for tier in tiers}
    for b, tier, n in points:
        if b in index:
            lines[tier or "none"][index[b]] += int(n)
    return {"x": [b * step for b in xs], "lines": lines}
