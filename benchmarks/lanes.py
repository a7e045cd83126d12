"""Priority lanes under a flood: critical requests' latency alone, beside a flood of background
requests (sent by a process of its own), and beside the same flood sent in the normal lane (what
happens without lanes). One
gateway, one simulated upstream answering in --upstream-ms, the upstream's concurrency limited
(`max_concurrency`, a quarter kept for critical work); the phases alternate, so that drift in the
machine's speed hits all alike, and the medians of the rounds are compared.
Writes benchmarks/results/lanes.json and prints its tables.

    python benchmarks/lanes.py [--critical 200] [--flood 64] [--rounds 3] [--upstream-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from typing import Any

import aiohttp
from harness import Report, chat_body, gateway, simulator, summarise

KEY = "sk-bench"


def config(sim: str, concurrency: int) -> dict[str, Any]:
    return {
        "upstreams": [
            {
                "name": "small",
                "base_url": sim,
                "model": "sim-small",
                "max_concurrency": concurrency,
                "reserve_for_critical": 0.25,
                "queue_timeout_s": 60,
            }
        ],
        "agents": [{"id": "bench", "api_key": KEY, "max_concurrency": None}],
        "routes": [{"name": "auto", "llm": ["small"], "cache": {"enabled": False}}],
        "cache": {"backend": "none"},
    }


def _flood(url: str, clients: int, lane: str, stop: Any) -> None:
    """A process of its own sending `lane` requests from `clients` clients without pause until
    `stop` is set (its own event loop and CPU, so the measuring client is not slowed by it)."""

    async def run() -> None:
        headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
        headers["x-tiergate-priority"] = lane
        body = chat_body("auto")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

            async def client() -> None:
                while not stop.is_set():
                    async with session.post(f"{url}/chat/completions", data=body, headers=headers) as answer:
                        await answer.read()

            await asyncio.gather(*(client() for _ in range(clients)))

    asyncio.run(run())


async def critical_requests(url: str, n: int) -> list[float]:
    """`n` critical requests, two at a time; their latencies in ms."""
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    headers["x-tiergate-priority"] = "critical"
    body = chat_body("auto")
    async with aiohttp.ClientSession() as session:

        async def client(count: int) -> list[float]:
            times = []
            for _ in range(count):
                began = time.perf_counter()
                async with session.post(f"{url}/chat/completions", data=body, headers=headers) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"a critical request got {answer.status}")
                times.append((time.perf_counter() - began) * 1000)
            return times

        measured = await asyncio.gather(client(n // 2), client(n // 2))
    return [t for one in measured for t in one]


def phase(url: str, critical: int, flood: int, lane: str) -> list[float]:
    if not flood:
        return asyncio.run(critical_requests(url, critical))
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    flooder = context.Process(target=_flood, args=(url, flood, lane, stop))
    flooder.start()
    try:
        time.sleep(0.5)  # the flood is on before the first critical request
        return asyncio.run(critical_requests(url, critical))
    finally:
        stop.set()
        flooder.join(30)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    phases = {"alone": (0, "background"), "background flood": (args.flood, "background")}
    phases["normal-lane flood"] = (args.flood, "normal")
    out: dict[str, Any] = {name: [] for name in phases}
    with (
        simulator(["--latency-ms", str(args.upstream_ms)]) as sim,
        gateway(config(sim, args.concurrency)) as url,
    ):
        phase(url, 20, 0, "background")  # warm-up
        for _ in range(args.rounds):
            for name, (flood, lane) in phases.items():
                out[name].append(summarise(phase(url, args.critical, flood, lane)))
    return out


def report(out: dict[str, Any], args: argparse.Namespace) -> Report:
    result = Report("lanes")
    alone = statistics.median(r["p99_ms"] for r in out["alone"])
    rows = []
    for name, rounds in out.items():
        p50 = statistics.median(r["p50_ms"] for r in rounds)
        p99 = statistics.median(r["p99_ms"] for r in rounds)
        rows.append([name, round(p50, 1), round(p99, 1), f"{p99 / alone:.3f}"])
    result.table(
        f"Critical requests ({args.critical} per phase, two at a time) with an upstream answering in"
        f" {args.upstream_ms} ms, {args.concurrency} places of which a quarter kept for critical work,"
        f" beside {args.flood} clients flooding (median of {args.rounds} alternating rounds;"
        " goal: a background flood moves critical p99 by at most 10 %)",
        ["phase", "critical p50 (ms)", "critical p99 (ms)", "p99 against alone"],
        rows,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--critical", type=int, default=200)
    parser.add_argument("--flood", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--upstream-ms", type=int, default=100)
    args = parser.parse_args()
    out = measure(args)
    report(out, args).save(out)


if __name__ == "__main__":
    main()
