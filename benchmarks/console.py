"""The operator console's pages with a million decisions stored.

A SQLite store (or a PostgreSQL database created and dropped on the server at --postgres) is
filled with --decisions records spread over the last seven days (agents, routes, tiers, statuses,
costs and latencies of a realistic mix), through the store's own `add_records` (so the per-minute
rollups are built as in production; PostgreSQL's tables are then analysed, as autovacuum would
soon after a bulk load); a gateway serves it as a real process; after logging in,
each page is fetched --fetches times in turn and its time to the last byte measured (p50, p95).
Writes benchmarks/results/console.json and prints its table.

    python benchmarks/console.py [--decisions 1000000] [--fetches 20]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
from harness import ROOT, Report, gateway, simulator

sys.path.insert(0, str(ROOT))
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade
from gateway.store.sql import SqlStore

ADMIN_KEY = "sk-bench-console-admin"
AGENTS = [f"agent-{i}" for i in range(8)]
ROUTES = ["triage", "auto", "classify"]
TIERS = [("rules", 0.35), ("classifier", 0.3), ("llm:small", 0.25), ("llm:large", 0.07), (None, 0.03)]
PAGES = [
    "overview?period=hour",
    "overview?period=day",
    "overview?period=week",
    "agents?period=week",
    "decisions",
    "decisions?agent=agent-3&route=auto",
    "approvals",
    "routes?period=week",
]


def records(n: int, now: float, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    weights = [w for _, w in TIERS]
    out = []
    for i in range(n):
        tier = rng.choices(TIERS, weights)[0][0]
        llm = tier is not None and tier.startswith("llm")
        prompt, completion = (rng.randint(40, 900), rng.randint(5, 400)) if llm else (0, 0)
        status = 200 if tier else rng.choice([429, 502, 400])
        record: dict[str, Any] = {
            "id": f"{secrets.token_hex(6)}{i:020x}",
            "time": now - rng.random() * 7 * 86400,
            "agent": rng.choice(AGENTS),
            "route": rng.choice(ROUTES),
            "status": status,
            "cache": "hit" if rng.random() < 0.1 else "miss",
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": (prompt * 0.15 + completion * 0.6) / 1e6,
            "baseline_usd": (max(prompt, 200) * 2.5 + max(completion, 100) * 10) / 1e6,
            "latency_ms": {"total": rng.lognormvariate(0 if not llm else 6, 0.8)},
            "last_user_message": "where is my parcel? it has been two weeks since I ordered it",
        }
        if tier:
            record["tier"] = tier
            record["confidence"] = round(rng.uniform(0.5, 1.0), 3)
        out.append(msgspec.json.encode(record))
    return out


async def fill(url: str, n: int, batch: int = 5000) -> float:
    """Store n decisions; seconds it took."""
    engine = create_engine(url)
    await upgrade(engine, url)
    store = SqlStore(engine)
    began = time.perf_counter()
    now = time.time()
    for start in range(0, n, batch):
        await store.add_records(records(min(batch, n - start), now, seed=start))
    seconds = time.perf_counter() - began
    if engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk load
        async with engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE")
    await store.close()
    return seconds


def fetch_pages(base: str, fetches: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {page: [] for page in PAGES}
    with httpx.Client(base_url=f"{base}/console", timeout=60) as client:
        login = client.post("/login", data={"key": ADMIN_KEY})
        if login.status_code != 303:
            raise SystemExit(f"console login failed: {login.status_code}")
        for page in PAGES:  # warm-up
            client.get(f"/{page}").raise_for_status()
        for _ in range(fetches):
            for page in PAGES:
                began = time.perf_counter()
                response = client.get(f"/{page}")
                response.raise_for_status()
                times[page].append((time.perf_counter() - began) * 1000)
    return times


def measure(url: str, sim: str, decisions: int, fetches: int) -> tuple[float, dict[str, list[float]]]:
    seconds = asyncio.run(fill(url, decisions))
    config = {
        "server": {"admin_key": ADMIN_KEY},
        "upstreams": [{"name": "small", "base_url": sim, "model": "sim-small"}],
        "agents": [{"id": a, "api_key": f"sk-{a}"} for a in AGENTS],
        "routes": [{"name": r, "llm": ["small"]} for r in ROUTES],
        "store": {"url": url, "spool_dir": tempfile.mkdtemp(prefix="tiergate-spool-")},
    }
    with gateway(config) as gw:
        return seconds, fetch_pages(gw.removesuffix("/v1"), fetches)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--fetches", type=int, default=20)
    parser.add_argument("--postgres", help="also on a database created (and dropped) on this server")
    args = parser.parse_args()
    engines: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as folder:
        engines.append(("SQLite", f"sqlite:///{Path(folder) / 'store.db'}"))
        postgres = None
        if args.postgres:
            sys.path.insert(0, str(ROOT))
            from tests.databases import create_database, drop_database

            postgres = f"tiergate_console_bench_{secrets.token_hex(4)}"
            engines.append(("PostgreSQL", create_database(args.postgres, postgres)))
        results: dict[str, tuple[float, dict[str, list[float]]]] = {}
        try:
            with simulator() as sim:
                for name, url in engines:
                    results[name] = measure(url, sim, args.decisions, args.fetches)
        finally:
            if postgres:
                drop_database(args.postgres, postgres)
    report = Report("console")
    rows = []
    for page in PAGES:
        row: list[Any] = [f"/console/{page}"]
        for name, _ in engines:
            samples = sorted(results[name][1][page])
            row += [statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]]
        rows.append(row)
    columns = ["page"] + [f"{name} {stat}" for name, _ in engines for stat in ("p50 ms", "p95 ms")]
    report.table(
        f"Console pages with {args.decisions:,} decisions stored"
        f" ({args.fetches} fetches each; goal: under 300 ms)",
        columns,
        rows,
    )
    report.table(
        "Filling the store (records through add_records, rollups included)",
        ["engine", "decisions", "seconds", "decisions/s"],
        [[name, args.decisions, secs, args.decisions / secs] for name, (secs, _) in results.items()],
    )
    report.save()


if __name__ == "__main__":
    main()
