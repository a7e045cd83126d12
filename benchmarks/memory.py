"""Memory per worker: RSS after 1,000 requests against RSS after 100,000 more, with a classifier
loaded, on a mix of classifier answers and pass-through calls to the simulated upstream.

    python benchmarks/memory.py [--model benchmarks/results/triage.joblib] [--requests 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp
from harness import Report, gateway, rss_and_fds, simulator, throughput, worker_pid

KEY = "sk-bench-memory"


def rss_mib(pid: int) -> float:
    return rss_and_fds(pid)[0]


async def warm(url: str, bodies: list[bytes], n: int, connections: int = 32) -> None:
    """n requests over `connections` connections at once, the shape of the load that follows."""
    sent = iter(range(n))

    async def client(session: aiohttp.ClientSession) -> None:
        for i in sent:
            body = bodies[i % len(bodies)]
            async with session.post(url, data=body, headers={"authorization": f"Bearer {KEY}"}) as response:
                await response.read()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        await asyncio.gather(*(client(session) for _ in range(connections)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="benchmarks/results/triage.joblib")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument(
        "--keep-last", type=int, help="records.keep_last (decision records kept in memory; default 10,000)"
    )
    args = parser.parse_args()
    with simulator() as sim:
        config = {
            "upstreams": [{"name": "small", "base_url": sim, "model": "sim-small"}],
            "agents": [{"id": "bench", "api_key": KEY, "budget": {"tokens_per_minute": 10**12}}],
            "routes": [
                {"name": "triage", "classifier": {"model": str(Path(args.model).resolve())}, "llm": ["small"]}
            ],
            "cache": {"backend": "memory", "max_entries": 10000},
        }
        if args.keep_last is not None:
            config["records"] = {"keep_last": args.keep_last}
        with gateway(config) as url:
            port = int(url.split(":")[2].split("/")[0])
            pid = worker_pid(port)
            texts = [f"my card {i} has not arrived, order {i * 7}" for i in range(500)] + ["tell me a joke"]
            bodies = [
                json.dumps({"model": "triage", "messages": [{"role": "user", "content": t}]}).encode()
                for t in texts
            ]
            asyncio.run(warm(f"{url}/chat/completions", bodies, 1000))
            after_1k = rss_mib(pid)
            sent = 0
            began = time.monotonic()
            while sent < args.requests:
                for body in (bodies[0], bodies[-1]):  # a classifier answer and an escalation to the LLM
                    sent += int(
                        throughput(f"{url}/chat/completions", body, f"Bearer {KEY}", 32, 10)["requests"]
                    )
            after = rss_mib(pid)
    report = Report("memory")
    report.table(
        f"One worker's RSS, model {Path(args.model).name}",
        ["after 1,000 requests (MiB)", "requests then sent", "after them (MiB)", "growth (MiB)", "seconds"],
        [[after_1k, sent, after, after - after_1k, round(time.monotonic() - began)]],
    )
    report.save()


if __name__ == "__main__":
    main()
