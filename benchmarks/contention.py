"""A budget under contention: a burst of concurrent requests that name no `max_tokens` (so each
reserves its prompt and 1,024 completion tokens) against a budget that can afford the whole burst,
across two gateway processes sharing one Redis. Measured: how many of the affordable requests were
admitted, the overspend (what the upstream served and what the ledger counts, beyond the limit),
the refusals by code, the longest Retry-After given, and the admitted requests' latency; with
`budget.wait_s` at its default (2 s) and at 0 (a request held back by reservations in flight is
refused at once, as before waiting existed).
Writes benchmarks/results/contention.json and prints its tables.

    python benchmarks/contention.py [--requests 240] [--concurrency 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import aiohttp
from harness import Report, chat_body, gateway, redis_server, simulator, summarise

KEY = "sk-bench"


def config(sim: str, redis_url: str | None, tokens_per_day: int | None, wait_s: float) -> dict[str, Any]:
    budget: dict[str, Any] = {"wait_s": wait_s}
    if tokens_per_day is not None:
        budget["tokens_per_day"] = tokens_per_day
    raw: dict[str, Any] = {
        "upstreams": [{"name": "small", "base_url": sim, "model": "sim-small", "max_retries": 0}],
        "agents": [{"id": "bench", "api_key": KEY, "budget": budget}],
        "routes": [{"name": "auto", "llm": ["small"], "cache": {"enabled": False}}],
        "cache": {"backend": "none"},
        "server": {"admin_key": "sk-admin"},
    }
    if redis_url is not None:
        raw["state"] = {"backend": "redis", "url": redis_url}
    return raw


def body(i: int) -> bytes:
    return chat_body("auto", f"ticket {i:04d}: my parcel has not arrived, where is it?")


async def burst(urls: list[str], requests: int, concurrency: int) -> list[dict[str, Any]]:
    """`requests` requests, `concurrency` at a time, spread over the gateways in turn."""
    gate = asyncio.Semaphore(concurrency)
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> dict[str, Any]:
            async with gate:
                began = time.perf_counter()
                async with session.post(
                    f"{urls[i % len(urls)]}/chat/completions", data=body(i), headers=headers
                ) as response:
                    answer = await response.json()
                    ms = (time.perf_counter() - began) * 1000
                    if response.status == 200:
                        return {"status": 200, "ms": ms, "tokens": answer["usage"]["total_tokens"]}
                    return {
                        "status": response.status,
                        "ms": ms,
                        "code": answer["error"]["code"],
                        "retry_after": int(response.headers.get("retry-after", "0")),
                    }

        return await asyncio.gather(*(one(i) for i in range(requests)))


async def used_tokens(url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{url.removesuffix('/v1')}/admin/usage",
            params={"agent": "bench"},
            headers={"authorization": "Bearer sk-admin"},
        ) as response,
    ):
        usage = await response.json()
    return int(next(w["used_tokens"] for w in usage["windows"] if w["window"] == "day"))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": {}}
    with simulator() as sim:
        # what the burst costs: each request once, without a budget
        with gateway(config(sim, None, None, 0)) as free:
            spent = asyncio.run(burst([free], args.requests, args.concurrency))
        needed = sum(r["tokens"] for r in spent)
        limit = needed  # affordable, exactly: every request of the burst fits, and not one more
        out["needed_tokens"], out["limit_tokens"] = needed, limit
        for wait_s in (2.0, 0.0):
            runs = []
            for _ in range(args.rounds):
                with (
                    redis_server() as redis_url,
                    gateway(config(sim, redis_url, limit, wait_s)) as one,
                    gateway(config(sim, redis_url, limit, wait_s)) as two,
                ):
                    results = asyncio.run(burst([one, two], args.requests, args.concurrency))
                    asyncio.run(used_tokens(two))  # a gateway reads back its own settlements first
                    ledger = asyncio.run(used_tokens(one))
                served = sum(r.get("tokens", 0) for r in results)
                refused = [r for r in results if r["status"] != 200]
                runs.append(
                    {
                        "admitted": sum(r["status"] == 200 for r in results),
                        "served_tokens": served,
                        "ledger_tokens": ledger,
                        "contended": sum(r.get("code") == "budget_contended" for r in refused),
                        "exhausted": sum(r.get("code") == "budget_exhausted" for r in refused),
                        "max_retry_after": max((r["retry_after"] for r in refused), default=0),
                        "latency": summarise([r["ms"] for r in results if r["status"] == 200] or [0.0]),
                    }
                )
            out["runs"][str(wait_s)] = runs
    return out


def report(out: dict[str, Any], args: argparse.Namespace) -> Report:
    result = Report("contention")
    rows = []
    for wait_s, runs in out["runs"].items():
        admitted = statistics.median(r["admitted"] for r in runs)
        rows.append(
            [
                f"{float(wait_s):.0f} s",
                f"{admitted / args.requests:.3f}",
                max(max(0, r["served_tokens"] - out["limit_tokens"]) for r in runs),
                max(max(0, r["ledger_tokens"] - out["limit_tokens"]) for r in runs),
                statistics.median(r["contended"] for r in runs),
                statistics.median(r["exhausted"] for r in runs),
                max(r["max_retry_after"] for r in runs),
                round(statistics.median(r["latency"]["p50_ms"] for r in runs), 1),
                round(statistics.median(r["latency"]["p99_ms"] for r in runs), 1),
            ]
        )
    result.table(
        f"{args.requests} requests naming no max_tokens, {args.concurrency} at a time, over two gateways"
        f" sharing Redis; a budget of exactly what they need ({out['limit_tokens']:,} tokens a day);"
        f" median of {args.rounds} runs, worst overspend and Retry-After (goal: no overspend, >= 0.9"
        " admitted, no Retry-After beyond a few seconds while the budget is not spent)",
        [
            "budget.wait_s",
            "share admitted",
            "overspend, upstream (tokens)",
            "overspend, ledger (tokens)",
            "429 contended",
            "429 exhausted",
            "longest Retry-After (s)",
            "admitted p50 (ms)",
            "admitted p99 (ms)",
        ],
        rows,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = measure(args)
    report(out, args).save(out)


if __name__ == "__main__":
    main()
