"""A bounded soak on loopback: steady load for a few minutes with faults mixed in (upstream 5xx,
hangs, resets, streams cut mid-way, clients that disconnect mid-stream), then the gateway worker's
RSS and open file descriptors against the start, and every response accounted for.

    python benchmarks/soak.py [--minutes 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections import Counter

import aiohttp
from harness import Report, gateway, rss_and_fds, simulator, worker_pid

KEY = "sk-soak"
MODELS = {  # route -> share of traffic
    "healthy": 0.55,
    "flaky": 0.15,  # 500s: retried, then the fallback answers
    "hangs": 0.05,  # first-token timeout, then the fallback answers
    "resets": 0.05,
    "cuts": 0.1,  # streams cut mid-way
    "stream": 0.1,
}


async def client(url: str, deadline: float, outcomes: Counter[str], rng: random.Random) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            route = rng.choices(list(MODELS), weights=list(MODELS.values()))[0]
            stream = route in ("cuts", "stream") or rng.random() < 0.2
            body = {
                "model": route,
                "stream": stream,
                "messages": [{"role": "user", "content": f"q{rng.random()}"}],
            }
            try:
                async with session.post(f"{url}/chat/completions", json=body, headers=headers) as response:
                    if stream and rng.random() < 0.1:
                        await response.content.readline()  # a client that walks away mid-stream
                        outcomes["client disconnected"] += 1
                        continue
                    text = await response.text()
                    if response.status != 200:
                        outcomes[f"HTTP {response.status}"] += 1
                    elif stream and '"error"' in text:
                        outcomes["stream ended with an error event"] += 1
                    else:
                        outcomes["HTTP 200"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcomes[f"lost: {type(exc).__name__}"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--keep-records", type=int, default=10_000, help="records kept for /admin/decisions")
    args = parser.parse_args()
    with simulator(["--per-token-ms", "0.5"]) as sim:
        fast = {
            "max_retries": 1,
            "retry_base_s": 0.01,
            "first_token_timeout_s": 0.5,
            "timeout_s": 5,
            "circuit": {"failures": 1000, "min_requests": 100000},
        }
        config = {
            "upstreams": [
                {"name": "ok", "base_url": sim, "model": "sim"},
                {"name": "e500", "base_url": sim, "model": "sim+fault=500", **fast},
                {"name": "hang", "base_url": sim, "model": "sim+fault=hang", **fast},
                {"name": "reset", "base_url": sim, "model": "sim+fault=reset", **fast},
                {"name": "cut", "base_url": sim, "model": "sim+fault=cut", **fast},
            ],
            "agents": [{"id": "soak", "api_key": KEY, "budget": {"tokens_per_minute": 10**12}}],
            "routes": [
                {"name": "healthy", "llm": ["ok"]},
                {"name": "flaky", "llm": ["e500", "ok"]},
                {"name": "hangs", "llm": ["hang", "ok"]},
                {"name": "resets", "llm": ["reset", "ok"]},
                {"name": "cuts", "llm": ["cut"]},
                {"name": "stream", "llm": ["ok"]},
            ],
            "cache": {"backend": "none"},
            "records": {"keep_last": args.keep_records},
        }
        with gateway(config) as url:
            pid = worker_pid(int(url.split(":")[2].split("/")[0]))
            outcomes: Counter[str] = Counter()
            warm_deadline = time.monotonic() + 10

            async def run(until: float) -> None:
                rng = random.Random(7)
                await asyncio.gather(*(client(url, until, outcomes, rng) for _ in range(args.concurrency)))

            asyncio.run(run(warm_deadline))
            start_rss, start_fds = rss_and_fds(pid)
            outcomes.clear()
            began = time.monotonic()
            asyncio.run(run(began + args.minutes * 60))
            time.sleep(1)
            end_rss, end_fds = rss_and_fds(pid)
            alive = os.path.exists(f"/proc/{pid}")
    total = sum(outcomes.values())
    report = Report("soak")
    report.table(
        f"{args.minutes:g} minutes at {args.concurrency} concurrent clients, faults mixed in",
        ["requests", "RSS start / end (MiB)", "open files start / end", "worker alive"],
        [[total, f"{start_rss:.1f} / {end_rss:.1f}", f"{start_fds} / {end_fds}", "yes" if alive else "no"]],
    )
    report.table(
        "Every response accounted for", ["outcome", "count"], [list(o) for o in outcomes.most_common()]
    )
    report.save()


if __name__ == "__main__":
    main()
