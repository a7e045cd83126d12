"""The decision store's cost and capacity, measured in one run.

1. Overhead: three gateways as real processes on loopback over one simulated upstream: without a
   store, with the SQLite store and with a PostgreSQL store (a database created and dropped on the
   server at --postgres). Pass-through and rules-answer latency at 1 connection (requests to each
   in turn, in a random order each round, with direct calls to the upstream), then rules-answer
   requests/s with wrk, the gateways alternating so that drift in the machine's speed hits all
   alike; the medians are compared.
2. Shipping: records of a realistic size written to a spool, then shipped by the shipper to a
   fresh SQLite file and to a fresh PostgreSQL database (created and dropped on the server at
   --postgres); records stored per second.
Writes benchmarks/results/store.json and prints its tables.

    python benchmarks/store.py [--requests 2000] [--seconds 8] [--rounds 3] [--records 50000]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from harness import ROOT, Report, chat_body, gateway, paired_latency, simulator, throughput

sys.path.insert(0, str(ROOT))
from gateway.observe.records import DecisionRecord
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade
from gateway.store.shipper import Shipper
from gateway.store.spool import SpoolWriter
from gateway.store.sql import SqlStore
from routing.ladder import Attempt
from tests.databases import create_database, drop_database

KEY = "sk-bench"


def config(
    sim: str, store_dir: str | None, ship_interval_s: float = 0.2, store_url: str | None = None
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "upstreams": [{"name": "small", "base_url": sim, "model": "sim-small"}],
        "agents": [{"id": "bench", "api_key": KEY}],
        "routes": [
            {"name": "pass", "llm": ["small"], "cache": {"enabled": False}},
            {
                "name": "rules",
                "rules": [{"when": {"contains_any": ["ticket"]}, "answer": "billing"}],
                "llm": ["small"],
                "cache": {"enabled": False},
            },
        ],
    }
    if store_dir is not None:
        url = store_url or f"sqlite:///{store_dir}/decisions.db"
        raw["store"] = {"url": url, "ship_interval_s": ship_interval_s, "auto_upgrade": True}
    return raw


def overhead(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Three gateways side by side: no store, the SQLite store, the PostgreSQL store."""
    name = "tiergate_bench_" + secrets.token_hex(4)
    postgres = create_database(args.postgres, name)
    try:
        with (
            tempfile.TemporaryDirectory() as sqlite_dir,
            tempfile.TemporaryDirectory() as postgres_dir,
            simulator() as sim,
            gateway(config(sim, None)) as off,
            gateway(config(sim, sqlite_dir, args.ship_interval)) as sqlite,
            gateway(config(sim, postgres_dir, args.ship_interval, postgres)) as pg,
        ):
            gateways = {"off": off, "SQLite": sqlite, "PostgreSQL": pg}
            headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
            direct = (f"{sim}/chat/completions", chat_body("sim-small"), {"content-type": "application/json"})
            targets = [direct]
            for gw in gateways.values():
                targets += [
                    (f"{gw}/chat/completions", chat_body(route), headers) for route in ("pass", "rules")
                ]
            measured = iter(paired_latency(targets, args.requests))
            out["latency"] = {"direct": next(measured)}
            for store in gateways:
                for scenario in ("pass-through", "rules answer"):
                    out["latency"][f"{scenario}, {store}"] = next(measured)
            rates: dict[str, list[float]] = {store: [] for store in gateways}
            for _ in range(args.rounds):  # alternating, so drift in the machine's speed hits all alike
                for store, gw in gateways.items():
                    result = throughput(
                        f"{gw}/chat/completions", chat_body("rules"), f"Bearer {KEY}", 32, args.seconds
                    )
                    if result["non_2xx"]:
                        raise SystemExit(f"store {store}: {result['non_2xx']} non-2xx answers")
                    rates[store].append(result["rps"])
            out["rules_rps"] = rates
    finally:
        drop_database(args.postgres, name)


def records(n: int) -> list[bytes]:
    """Records like the gateway's: a classifier that escalated, then an LLM answer."""
    encode = msgspec.json.Encoder().encode
    prefix = secrets.token_hex(11)
    now = time.time()
    return [
        encode(
            DecisionRecord(
                id=f"{prefix}{i:010x}",
                time=now + i * 1e-4,
                agent=f"agent-{i % 20}",
                route="ticket-triage",
                status=200,
                tier="llm:small",
                upstream="small",
                confidence=1.0,
                attempts=[
                    Attempt(tier="rules", outcome="escalated", reason="no rule matched", latency_ms=0.02),
                    Attempt(
                        tier="classifier",
                        outcome="escalated",
                        reason="below the threshold 0.9",
                        confidence=0.41,
                        latency_ms=0.2,
                    ),
                    Attempt(tier="llm:small", outcome="answered", confidence=1.0, latency_ms=350.0),
                ],
                cache="miss",
                prompt_tokens=120,
                completion_tokens=40,
                cost_usd=0.000042,
                latency_ms={"ladder": 351.0, "total": 352.4},
                complexity=0.31,
                last_user_message="my invoice shows a charge twice for the same order " * 3,
            )
        )
        for i in range(n)
    ]


async def ship(url: str, lines: list[bytes], spool_dir: Path, batch: int) -> dict[str, float]:
    engine = create_engine(url)
    await upgrade(engine, url)
    store = SqlStore(engine)
    spool = SpoolWriter(spool_dir, max_bytes=1 << 34)
    for line in lines:
        spool.write(line)
    shipper = Shipper(store, spool, interval_s=1.0, batch=batch, retention_s=86400 * 30)
    began = time.perf_counter()
    shipped = await shipper.ship()
    seconds = time.perf_counter() - began
    spool.close()
    await store.close()
    if shipped != len(lines):
        raise SystemExit(f"{url}: shipped {shipped} of {len(lines)}")
    return {"records": shipped, "seconds": seconds, "per_s": shipped / seconds}


def shipping(args: argparse.Namespace, out: dict[str, Any]) -> None:
    lines = records(args.records)
    out["record_bytes"] = statistics.mean(len(x) for x in lines)
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite"] = asyncio.run(
            ship(f"sqlite:///{tmp}/decisions.db", lines, Path(tmp) / "s1", args.batch)
        )
    name = "tiergate_bench_" + secrets.token_hex(4)
    url = create_database(args.postgres, name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out["postgresql"] = asyncio.run(ship(url, lines, Path(tmp), args.batch))
    finally:
        drop_database(args.postgres, name)


def report(out: dict[str, Any], args: argparse.Namespace) -> Report:
    result = Report("store")
    if "latency" in out:
        overhead_tables(result, out, args)
    if "sqlite" in out:
        shipping_table(result, out, args)
    return result


def overhead_tables(result: Report, out: dict[str, Any], args: argparse.Namespace) -> None:
    latency = out["latency"]
    direct = latency["direct"]["p50_ms"]
    stores = list(out["rules_rps"])
    result.table(
        f"Latency added over a direct call at 1 connection, p50 (ms; {args.requests} requests each)",
        ["scenario", *(f"store {s}" if s == "off" else s for s in stores)],
        [
            [scenario, *(round(latency[f"{scenario}, {s}"]["p50_ms"] - direct, 3) for s in stores)]
            for scenario in ("pass-through", "rules answer")
        ],
    )
    medians = {s: statistics.median(rates) for s, rates in out["rules_rps"].items()}
    result.table(
        f"Rules answers/s at 32 connections, 1 worker (median of {args.rounds} alternating runs of"
        f" {args.seconds} s; goal: store on within 10 % of off)",
        ["store", "requests/s", "share of off"],
        [[s, round(m), f"{m / medians['off']:.3f}"] for s, m in medians.items()],
    )


def shipping_table(result: Report, out: dict[str, Any], args: argparse.Namespace) -> None:
    result.table(
        f"Records shipped from a spool to the store ({args.records} records of"
        f" {out['record_bytes']:.0f} bytes, batches of {args.batch}; goal: >= 5,000/s)",
        ["store", "records/s", "seconds"],
        [
            [engine, round(out[engine]["per_s"]), round(out[engine]["seconds"], 2)]
            for engine in ("sqlite", "postgresql")
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="paired requests at 1 connection")
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating wrk runs per gateway")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2000, help="the shipper's batch (store.ship_batch)")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--only", choices=["overhead", "shipping"])
    parser.add_argument(
        "--ship-interval", type=float, default=0.2, help="store.ship_interval_s of the gateways with a store"
    )
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.only != "shipping":
        overhead(args, out)
    if args.only != "overhead":
        shipping(args, out)
    report(out, args).save(out)


if __name__ == "__main__":
    main()
