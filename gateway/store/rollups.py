"""Decisions summed per slot of time (a minute, an hour), agent, route and tier: computed from each
shipped batch (the records the store had not seen before) and added to the rollup tables' rows in
one upsert each, so the console reads thousands of rows, not millions of records."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

import msgspec

from gateway.store.schema import CONFIDENCE_BUCKETS, LATENCY_EDGES_MS

SUMS = ("requests", "errors", "refused", "loops", "cache_hits", "prompt_tokens", "completion_tokens")
MONEY = ("cost_usd", "baseline_usd")
LATENCY = tuple(f"lat_{i}" for i in range(len(LATENCY_EDGES_MS) + 1))
CONFIDENCE = tuple(f"conf_{i}" for i in range(CONFIDENCE_BUCKETS))
ADDED = (*SUMS, *MONEY, *LATENCY, *CONFIDENCE)
KEY = ("slot", "agent", "route", "tier")


class _Record(msgspec.Struct, kw_only=True):
    """What a rollup reads of a decision record."""

    id: str
    time: float
    agent: str
    route: str
    status: int
    tier: str | None = None
    confidence: float | None = None
    cache: str = "bypass"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    baseline_usd: float = 0.0
    latency_ms: dict[str, float] = {}
    error_code: str | None = None


_decode = msgspec.json.Decoder(_Record)


def latency_bucket(ms: float) -> int:
    return bisect.bisect_right(LATENCY_EDGES_MS, ms)


def confidence_bucket(confidence: float) -> int:
    return min(CONFIDENCE_BUCKETS - 1, max(0, int(confidence * CONFIDENCE_BUCKETS)))


def decode(records: Iterable[bytes | str]) -> list[_Record]:
    return [_decode.decode(raw) for raw in records]


def slot_rows(records: list[_Record], width_s: int) -> list[dict[str, Any]]:
    """The rows to add for these records (one per slot of `width_s`, agent, route and tier)."""
    rows: dict[tuple[int, str, str, str], dict[str, Any]] = {}
    for r in records:
        key = (int(r.time // width_s), r.agent, r.route, r.tier or "")
        row = rows.get(key)
        if row is None:
            row = rows[key] = {**dict(zip(KEY, key, strict=True)), **dict.fromkeys(ADDED, 0)}
        row["requests"] += 1
        row["errors"] += r.status >= 500
        row["refused"] += 400 <= r.status < 500
        row["loops"] += bool(r.error_code and r.error_code.startswith("loop_detected"))
        row["cache_hits"] += r.cache == "hit"
        row["prompt_tokens"] += r.prompt_tokens
        row["completion_tokens"] += r.completion_tokens
        row["cost_usd"] += r.cost_usd
        row["baseline_usd"] += r.baseline_usd
        row[LATENCY[latency_bucket(r.latency_ms.get("total", 0.0))]] += 1
        if r.confidence is not None and r.tier is not None:
            row[CONFIDENCE[confidence_bucket(r.confidence)]] += 1
    return list(rows.values())


def upsert_sql(table: str, postgres: bool) -> str:
    """The driver-level statement adding one row to a rollup table (run for many rows at once): the
    driver's own executemany, with no per-row work in SQLAlchemy."""
    columns = (*KEY, *ADDED)
    marks = [f"${i + 1}" if postgres else "?" for i in range(len(columns))]
    added = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in ADDED)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(marks)})"
        f" ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {added}"
    )


def as_tuples(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    columns = (*KEY, *ADDED)
    return [tuple(row[name] for name in columns) for row in rows]


def percentile(buckets: list[int], share: float) -> float | None:
    """The latency (ms, a bucket's upper edge) under which `share` of the requests fall."""
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= share * total:
            return float(LATENCY_EDGES_MS[i]) if i < len(LATENCY_EDGES_MS) else float("inf")
    return float("inf")
